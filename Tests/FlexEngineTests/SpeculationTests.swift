import Foundation
import Testing
@testable import FlexEngine
import FlexSystem

/// Speculative decoding: drafted tokens verified several per pass give exactly the ids of plain
/// decoding when greedy, and the same distribution when sampling; the drafter and the draft
/// length controller behave as documented.
@Suite struct SpeculationUnitTests {
    @Test func lookupProposesWhatFollowedTheLongestLatestMatch() {
        //            0  1  2  3  4  5  6  7  8  9
        let h: [Int32] = [5, 1, 2, 3, 9, 1, 2, 3, 7, 1, 2, 3]
        let l = PromptLookup(maxNGram: 3, minNGram: 2)
        // The last 3 tokens (1 2 3) occur ending at 4 and at 8; the latest (8) wins: 7 1 2 3.
        let found = l.find(count: h.count, limit: 8) { h[$0] }
        #expect(found?.start == 8)
        #expect(found?.n == 3)
        #expect(found?.length == 4)
        #expect(l.find(count: h.count, limit: 2) { h[$0] }?.length == 2)
        #expect(l.find(count: h.count, limit: 0) { h[$0] } == nil)
        // No bigram repeats: nothing to draft.
        let fresh: [Int32] = [1, 2, 3, 4, 5]
        #expect(l.find(count: fresh.count, limit: 4) { fresh[$0] } == nil)
        // A shorter n-gram is used when the longest has no match: (4, 6) is new, (6) alone is
        // below minNGram 2, so nil; with minNGram 1, 6 → 8.
        let short: [Int32] = [6, 8, 4, 6]
        #expect(l.find(count: short.count, limit: 4) { short[$0] } == nil)
        #expect(PromptLookup().find(count: short.count, limit: 4) { short[$0] }?.n == 1)
        #expect(PromptLookup(maxNGram: 3, minNGram: 1).find(count: short.count, limit: 4) { short[$0] }.map { [$0.start, $0.length] } == [1, 3])
    }

    @Test func lookupSaysWhatTheOtherOccurrencesSay() {
        func kind(_ h: [Int32]) -> PromptLookup.Kind? { PromptLookup().find(count: h.count, limit: 4) { h[$0] }?.kind }
        // (1 2 3 4) was followed by 5 twice: agreed. By 5 and then 6: split, and the latest (6)
        // is drafted. Only the longest n-gram's occurrences count: (2 5 1 2) occurs once.
        #expect(kind([1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4]) == .agreed)
        let split: [Int32] = [1, 2, 3, 4, 5, 1, 2, 3, 4, 6, 1, 2, 3, 4]
        #expect(kind(split) == .split)
        #expect(PromptLookup().find(count: split.count, limit: 4) { split[$0] }?.start == 9)
        #expect(kind([1, 2, 5, 1, 2, 5, 1, 2]) == .long)
        // Once: long for two or more tokens, short for one.
        #expect(kind([1, 2, 5, 1, 2]) == .long)
        #expect(kind([6, 8, 4, 6]) == .short)
        #expect(kind([6, 8, 6, 9, 6]) == .split)
    }

    @Test func aStalledPassDoesNotMakeRowsLookFree() {
        // In memory: a pass 10 ms, a drafted row 8 ms, half the drafts accepted: no draft pays.
        var c = DraftLengthController(mode: .auto, maxDraft: 8)
        c.record(seconds: 0.010, drafted: 0, accepted: 0)
        for _ in 0..<10 { c.record(seconds: 0.010 + 2 * 0.008, drafted: 2, accepted: 1, kind: .long) }
        #expect(c.length(.long) == 0)
        // One plain pass stalls for 100 ms (a page fault): the drafted passes after it must not
        // read as rows costing nothing.
        c.record(seconds: 0.110, drafted: 0, accepted: 0)
        #expect(c.passSeconds! < 0.0125)
        for _ in 0..<3 { c.record(seconds: 0.010 + 2 * 0.008, drafted: 2, accepted: 1, kind: .long) }
        #expect(c.rowSeconds! > 0.005)
        #expect(c.length(.long) == 0)
        // A lasting change still comes through: passes now take 40 ms (a slower disk), rows
        // still 8 ms, and drafts pay.
        for _ in 0..<12 { c.record(seconds: 0.040, drafted: 0, accepted: 0) }
        #expect(c.passSeconds! > 0.035)
        for _ in 0..<10 { c.record(seconds: 0.040 + 2 * 0.008, drafted: 2, accepted: 1, kind: .long) }
        #expect(c.length(.long) > 0)
    }

    @Test func eachKindOfMatchHasItsOwnAcceptance() {
        // A drafted row costs a fifth of a pass: a draft pays above 20 % acceptance. Agreed
        // matches start at 74 %, split ones at 9 % (the calibration split's figures).
        var c = DraftLengthController(mode: .auto, maxDraft: 8)
        c.record(seconds: 0.01, drafted: 0, accepted: 0)
        c.record(seconds: 0.01 + 4 * 0.002, drafted: 4, accepted: 3, kind: .agreed)
        #expect(c.length(.agreed) > 0)
        #expect(c.length(.split) == 0)
        // What a kind measures moves only its own estimate.
        for _ in 0..<20 { c.record(seconds: 0.01 + 0.002, drafted: 1, accepted: 1, kind: .split) }
        #expect(c.length(.split) > 0)
        for _ in 0..<20 { c.record(seconds: 0.01 + 4 * 0.002, drafted: 4, accepted: 0, kind: .agreed) }
        #expect(c.length(.agreed) == 0)
        #expect(c.length(.split) > 0)
    }

    @Test func draftLengthFollowsTheCostOfARowAndTheAcceptance() {
        // Bound by the disk: a drafted row costs 2 % of a pass; even 30 % acceptance pays.
        var disk = DraftLengthController(mode: .auto, maxDraft: 8)
        #expect(disk.length() == 0)   // a plain pass is measured first
        disk.record(seconds: 0.1, drafted: 0, accepted: 0)
        #expect(disk.length() == 8)   // then a drafted one
        for _ in 0..<20 { disk.record(seconds: 0.1 + 8 * 0.002, drafted: 8, accepted: 0); disk.record(seconds: 0.1 + 8 * 0.002, drafted: 8, accepted: 2) }
        #expect(disk.length() > 0)
        // In memory: a drafted row costs as much as a pass; only near-certain drafts would pay.
        var memory = DraftLengthController(mode: .auto, maxDraft: 8)
        memory.record(seconds: 0.01, drafted: 0, accepted: 0)
        for _ in 0..<20 { memory.record(seconds: 0.01 + 4 * 0.01, drafted: 4, accepted: 1) }
        #expect(memory.length() == 0)
        // ... and it probes again now and then, so a new cap can turn drafts back on.
        var probes = 0
        for _ in 0..<(2 * DraftLengthController.probeEvery) where memory.length() > 0 { probes += 1 }
        #expect(probes == 2)
        var off = DraftLengthController(mode: .off, maxDraft: 8)
        #expect(off.length() == 0)
        var always = DraftLengthController(mode: .lookup, maxDraft: 5)
        #expect(always.length() == 5)
    }

    /// Speculative sampling of a free draft gives tokens distributed as plain sampling: over
    /// 40,000 seeds each, a two-sample chi-square over the candidates stays below the 0.1 %
    /// critical value, for a likely draft, an unlikely one, and one outside the candidates.
    @Test func verifyingADraftKeepsTheSamplingDistribution() throws {
        let vocab = 64
        var logits = [Float](repeating: 0, count: vocab)
        for i in 0..<vocab { logits[i] = 3 * sinf(Float(i) * 0.7) + Float(i % 5) * 0.3 }
        let params = SamplingParameters(temperature: 0.9, topK: 12, topP: 0.97, minP: 0.02, seed: 0)
        let order = (0..<vocab).sorted { logits[$0] > logits[$1] }
        let n = 40_000
        func counts(_ draft: Int32?) -> [Int: Int] {
            var c: [Int: Int] = [:]
            for seed in 0..<n {
                var p = params
                p.seed = UInt64(seed) &* 0x9E37_79B9 &+ (draft.map { UInt64($0) + 1 } ?? 0) << 40
                var s = Sampler(p, vocabularySize: vocab)
                var l = logits
                let t = l.withUnsafeMutableBufferPointer { b in draft.map { s.verify(b, draft: $0) } ?? s.sample(b) }
                c[Int(t), default: 0] += 1
            }
            return c
        }
        let plain = counts(nil)
        for draft in [Int32(order[0]), Int32(order[4]), Int32(order[40])] {
            let spec = counts(draft)
            let keys = Set(plain.keys).union(spec.keys)
            // Two samples of equal size: chi² = Σ (a − b)² / (a + b), df = categories − 1.
            var chi2 = 0.0
            for k in keys {
                let a = Double(plain[k] ?? 0), b = Double(spec[k] ?? 0)
                chi2 += (a - b) * (a - b) / (a + b)
            }
            let df = keys.count - 1
            // The 0.1 % critical values of chi² for df = 1…15.
            let critical = [10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59, 31.26, 32.91, 34.53, 36.12, 37.70]
            #expect(df >= 2 && df <= critical.count)
            #expect(chi2 < critical[df - 1], "draft \(draft): chi² \(chi2) over \(df) degrees of freedom")
        }
        // And the statistic does detect a wrong distribution: always accepting the draft.
        var wrong = plain
        wrong[order[4], default: 0] += n / 10
        wrong[order[0], default: 0] -= n / 10
        var chi2 = 0.0
        for k in Set(plain.keys).union(wrong.keys) {
            let a = Double(plain[k] ?? 0), b = Double(wrong[k] ?? 0)
            if a + b > 0 { chi2 += (a - b) * (a - b) / (a + b) }
        }
        #expect(chi2 > 100)
    }
}

/// End to end on the default model: speculation changes how many tokens a pass yields, never
/// which tokens.
@Suite(.enabled(if: Fixtures.smolLM2Available), .serialized) struct SpeculationTests {
    /// Prompts where prompt lookup finds drafts (a list to repeat, code, a passage to quote) and
    /// one where it finds few.
    static let prompts = [
        "Here is a list of the planets in order: Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus, Neptune. "
            + "Repeat the list of the planets in order: Mercury,",
        "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n",
        "Passage: The river rises in the hills, runs east past the old mill, and reaches the sea at the harbour town. "
            + "Question: Where does the river reach the sea? Answer: The river",
        "The capital of France is",
    ]

    static func generate(_ engine: Engine, _ prompt: String, tokens: Int = 48,
                         sampling: SamplingParameters = .greedy) throws -> (ids: [Int32], stats: GenerationStats) {
        var p = GenerateParameters(maxTokens: tokens, sampling: sampling)
        p.stopAtEndOfGeneration = false
        var it = try engine.generate(prompt: prompt, parameters: p)
        var ids: [Int32] = []
        while let t = try it.nextToken() { ids.append(t.id) }
        return (ids, it.stats)
    }

    static func check(_ base: EngineOptions, modes: [SpeculationMode] = [.lookup, .auto]) throws {
        let plain = try Engine(options: base)
        let reference = try prompts.map { try generate(plain, $0).ids }
        for mode in modes {
            var o = base
            o.speculation = mode
            let engine = try Engine(options: o)
            var drafted = 0, accepted = 0
            for (p, want) in zip(prompts, reference) {
                let (ids, stats) = try generate(engine, p)
                #expect(ids == want, "\(mode) on \(p.prefix(30))")
                drafted += stats.draftedTokens
                accepted += stats.acceptedTokens
                #expect(stats.decodePasses <= ids.count - 1)
            }
            // The check above means something only if drafts were verified and some accepted.
            if mode == .lookup { #expect(drafted > 20 && accepted > 10, "drafted \(drafted), accepted \(accepted)") }
        }
    }

    @Test func greedyIdsAreUnchangedInMemory() throws {
        try Self.check(SessionTests.options(context: 256))
    }

    @Test func greedyIdsAreUnchangedUnderACapThatStreams() throws {
        let full = try Engine(options: SessionTests.options(context: 256)).memory.total
        let o = try SessionTests.options(context: 256, limit: full / 2)
        let engine = try Engine(options: o)
        #expect(engine.plan?.isFullyResident == false)
        try Self.check(o, modes: [.lookup, .auto])
    }

    /// Windowed layers (a 12-position window on every other layer, so the rings wrap many times
    /// in 48 tokens): drafts are verified over the ring and rejected ones cut back within its
    /// slack, and the ids are the plain ones. (A CI run once saw ids differ here; the cause was
    /// prompt chunks longer than the ring's slack racing on a ring row, fixed in the session.)
    @Test func windowedLayersDraftAndKeepTheirIds() throws {
        var o = try SessionTests.options(context: 256)
        o.attentionWindows = (0..<30).map { $0 % 2 == 1 ? 12 : nil }
        let plain = try Engine(options: o)
        o.speculation = .lookup
        let spec = try Engine(options: o)
        var drafted = 0
        for p in Self.prompts {
            let (ids, stats) = try Self.generate(spec, p)
            drafted += stats.draftedTokens
            #expect(ids == (try Self.generate(plain, p).ids), "\(p)")
        }
        #expect(drafted > 0, "no prompt drafted anything")
    }

    /// Batched sequences each draft on their own and still get their alone ids.
    @Test func batchedSequencesWithDraftsEqualPlainOnes() throws {
        var o = try SessionTests.options(sequences: 4, context: 256)
        let plain = try Engine(options: o)
        o.speculation = .lookup
        let spec = try Engine(options: o)
        var p = GenerateParameters(maxTokens: 40, sampling: .greedy)
        p.stopAtEndOfGeneration = false
        func run(_ e: Engine) throws -> [[Int32]] {
            var ids = Array(repeating: [Int32](), count: Self.prompts.count)
            var it = try e.generate(prompts: Self.prompts, parameters: p)
            while let ev = it.next() { if case .token(let i, let t) = ev { ids[i].append(t.id) } }
            if let e = it.error { throw e }
            return ids
        }
        #expect(try run(spec) == run(plain))
    }

    /// Sampled text: for a fixed seed the draws differ, but the distribution does not. Over 200
    /// seeds each, the second generated token (the one a draft is verified for, accepted with
    /// probability p(draft) or resampled from the rest) and the third have the same
    /// distributions with and without drafts: a two-sample chi-square below the 0.1 % critical
    /// value over the tokens seen at least 5 times, the rest pooled.
    @Test func sampledTokensKeepTheirDistribution() throws {
        let base = try SessionTests.options(context: 64)
        var o = base
        o.speculation = .lookup
        let plain = try Engine(options: base), spec = try Engine(options: o)
        // Short (each of the 400 runs processes it) and repetitive (a draft at once).
        let prompt = "red, green, blue, red, green, blue, red, green,"
        var a = [[Int32: Int]](repeating: [:], count: 2), b = a
        var drafted = 0, accepted = 0
        let seeds = 200
        for seed in 0..<seeds {
            let s = SamplingParameters(temperature: 1.0, topK: 0, topP: 1, minP: 0, seed: UInt64(seed))
            let s2 = SamplingParameters(temperature: 1.0, topK: 0, topP: 1, minP: 0, seed: UInt64(seed + 100_000))
            let x = try Self.generate(plain, prompt, tokens: 3, sampling: s).ids
            let r = try Self.generate(spec, prompt, tokens: 3, sampling: s2)
            for i in 0..<2 {
                a[i][x[i + 1], default: 0] += 1
                b[i][r.ids[i + 1], default: 0] += 1
            }
            drafted += r.stats.draftedTokens
            accepted += r.stats.acceptedTokens
        }
        // Every seed's second token was verified against a draft, and some were accepted.
        #expect(drafted >= seeds * 9 / 10 && accepted > 0, "drafted \(drafted), accepted \(accepted)")
        let critical = [10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59, 31.26, 32.91, 34.53, 36.12, 37.70]
        for i in 0..<2 {
            var chi2 = 0.0, df = -1, restA = 0, restB = 0
            for k in Set(a[i].keys).union(b[i].keys) {
                let x = a[i][k] ?? 0, y = b[i][k] ?? 0
                if x + y < 5 { restA += x; restB += y; continue }
                chi2 += Double((x - y) * (x - y)) / Double(x + y)
                df += 1
            }
            if restA + restB > 0 { chi2 += Double((restA - restB) * (restA - restB)) / Double(restA + restB); df += 1 }
            #expect(df >= 1 && df <= critical.count, "token \(i + 2): \(df) degrees of freedom: \(a[i]) / \(b[i])")
            if df >= 1 && df <= critical.count { #expect(chi2 < critical[df - 1], "token \(i + 2): chi² \(chi2), df \(df): \(a[i]) / \(b[i])") }
        }
    }
}
