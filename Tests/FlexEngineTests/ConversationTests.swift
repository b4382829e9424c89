import Foundation
import Testing
@testable import FlexEngine

/// Kept caches and multi-turn chat: a turn that continues a kept cache runs only its new tokens
/// and gives exactly the ids of the whole conversation run from scratch.
@Suite(.enabled(if: Fixtures.smolLM2Available), .serialized) struct ConversationTests {
    static var greedy: GenerateParameters { GenerateParameters(maxTokens: 20, sampling: .greedy) }

    static func run(_ it: inout TokenIterator) throws -> [Int32] {
        var ids: [Int32] = []
        while let t = it.next() { ids.append(t.id) }
        if let e = it.error { throw e }
        return ids
    }

    /// The reference: a fresh engine runs `tokens` with no cache.
    static func fresh(_ tokens: [Int32], limit: Int? = nil) throws -> [Int32] {
        var it = try Engine(options: SessionTests.options(context: 256, limit: limit)).generate(tokens: tokens, parameters: greedy)
        return try run(&it)
    }

    @Test(arguments: [false, true])
    func secondTurnRunsOnlyItsTokensAndEqualsAFreshRun(capped: Bool) throws {
        let limit: Int? = capped ? try Engine(options: SessionTests.options(context: 256)).memory.total / 2 : nil
        let engine = try Engine(options: SessionTests.options(context: 256, limit: limit))
        let chat = try Conversation(engine: engine, parameters: Self.greedy)
        var first = try chat.send("The secret word is \"banana\". Reply OK.")
        let firstIDs = try Self.run(&first.tokens)
        #expect(first.tokens.stats.reusedPromptTokens == 0)
        #expect(firstIDs == (try Self.fresh(engine.tokenizer.encode(engine.chatTemplate!.render(
            messages: [ChatMessage(role: "user", content: "The secret word is \"banana\". Reply OK.")])), limit: limit)))
        chat.finish(first)
        #expect(engine.session.keptCaches.count == 1)

        var second = try chat.send("What is the secret word?")
        let secondIDs = try Self.run(&second.tokens)
        let s = second.tokens.stats
        // Everything up to the end of the first reply came from the cache.
        #expect(s.reusedPromptTokens >= first.promptTokens + firstIDs.count - 1)
        #expect(s.promptTokens + s.reusedPromptTokens == second.promptTokens)
        #expect(s.promptTokens < 20, "a second turn should prefill only its own tokens, ran \(s.promptTokens)")
        let whole = engine.tokenizer.encode(try engine.chatTemplate!.render(messages: chat.messages))
        #expect(whole.count == second.promptTokens)
        #expect(secondIDs == (try Self.fresh(whole, limit: limit)), "a turn on a kept cache differs from the same prompt run fresh")
        chat.finish(second)
        #expect(chat.messages.map(\.role) == ["user", "assistant", "user", "assistant"])

        chat.reset()
        #expect(engine.session.keptCaches.isEmpty)
        #expect(engine.session.kvCache.pagesInUse == 0, "a reset conversation keeps pages")
    }

    /// A cache whose history parts from the new prompt is cut back to the common prefix; a
    /// prompt equal to the history still runs its last token (the first logits need it).
    @Test func divergentAndIdenticalPromptsOnAKeptCache() throws {
        let engine = try Engine(options: SessionTests.options(context: 256))
        var keep = Self.greedy
        keep.keepCache = true
        let a = engine.tokenizer.encode("The capital of France is Paris. The capital of Italy is")
        var it = try engine.generate(tokens: a, parameters: keep)
        _ = try Self.run(&it)
        let b = engine.tokenizer.encode("The capital of France is Paris. The capital of Spain is")
        var it2 = try engine.generate(tokens: b, parameters: keep, continuing: it.sequence)
        let ids = try Self.run(&it2)
        var common = 0
        while a[common] == b[common] { common += 1 }
        #expect(it2.stats.reusedPromptTokens == common)
        #expect(ids == (try Self.fresh(b)))
        // The same prompt again: all but its last token come from the cache.
        var it3 = try engine.generate(tokens: b, parameters: keep, continuing: it2.sequence)
        #expect(try Self.run(&it3) == ids)
        #expect(it3.stats.reusedPromptTokens == b.count - 1 && it3.stats.promptTokens == 1)
        // A cache is taken once: continuing it again is refused with a clear error.
        #expect(throws: EngineError.self) {
            var again = try engine.generate(tokens: b, parameters: keep, continuing: it2.sequence)
            _ = again.next()
            if let e = again.error { throw e }
        }
        engine.session.release(it3.sequence!)
        #expect(engine.session.kvCache.pagesInUse == 0)
    }

    /// A conversation that outgrows the context drops its oldest turns, says so, and the turn
    /// after that still equals the kept conversation run fresh.
    @Test func fullContextDropsTheOldestTurns() throws {
        let engine = try Engine(options: SessionTests.options(context: 128))
        let chat = try Conversation(engine: engine, parameters: Self.greedy)
        var dropped = 0
        for i in 0..<6 {
            var turn = try chat.send("Tell me fact number \(i) about the sea, in one sentence please.")
            let ids = try Self.run(&turn.tokens)
            dropped += turn.droppedTurns
            if turn.droppedTurns > 0 {
                let whole = engine.tokenizer.encode(try engine.chatTemplate!.render(messages: chat.messages))
                #expect(whole.count + 20 <= 128)
                #expect(ids == (try Self.fresh(whole)))
            }
            chat.finish(turn)
        }
        #expect(dropped > 0, "six turns in a 128-token context should drop some")
        #expect(chat.messages.first?.role == "user")
    }

    /// The template's assistant-turn terminator is a stop token: `<|im_end|>` for SmolLM2.
    @Test func templateTerminatorIsAStopToken() throws {
        let model = try Model(path: try Fixtures.requireSmolLM2())
        #expect(model.chatTemplate?.assistantTerminator == "<|im_end|>")
        let id = model.tokenizer.tokenID("<|im_end|>")!
        #expect(model.stopTokens.contains(id))
    }
}
