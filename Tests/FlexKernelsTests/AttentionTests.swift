import Testing
@testable import FlexKernels

/// The paged, grouped attention kernel against the plain contiguous one, head by head.
@Suite struct AttentionTests {
    @Test(arguments: [(1, 64, 1), (3, 64, 37), (3, 64, 130), (4, 128, 9), (2, 256, 70)])
    func pagedGroupEqualsThePlainHeadOverShuffledPages(group: Int, headDim: Int, count: Int) {
        var rng = SystemRandomNumberGenerator()
        let pageTokens = 16, kvDim = 2 * headDim   // two KV heads; the second is used
        let pageCount = (count + pageTokens - 1) / pageTokens
        let pageStride = pageTokens * kvDim
        // Pages handed out in a shuffled order, with a spare page between, as a pool would.
        let table: [Int32] = (0..<pageCount).map { Int32(2 * $0 + 1) }.shuffled()
        let poolPages = 2 * pageCount + 1
        var keys = [Float16](repeating: .nan, count: poolPages * pageStride)
        var values = [Float16](repeating: .nan, count: poolPages * pageStride)
        // The same positions laid out contiguously for the reference.
        var flatK = [Float16](repeating: 0, count: count * kvDim), flatV = flatK
        for t in 0..<count {
            let at = Int(table[t / pageTokens]) * pageStride + (t % pageTokens) * kvDim
            for i in 0..<kvDim {
                let k = Float16(Float.random(in: -2...2, using: &rng)), v = Float16(Float.random(in: -2...2, using: &rng))
                keys[at + i] = k; values[at + i] = v
                flatK[t * kvDim + i] = k; flatV[t * kvDim + i] = v
            }
        }
        let queries = (0..<group * headDim).map { _ in Float.random(in: -1...1, using: &rng) }
        let scale = 1 / Float(headDim).squareRoot()
        var out = [Float](repeating: 0, count: group * headDim)
        var scores = [Float](repeating: 0, count: group * count)
        var rows = [Float](repeating: 0, count: 8 * headDim)
        keys.withUnsafeBufferPointer { k in values.withUnsafeBufferPointer { v in
            Attention.pagedGroup(queries: queries, group: group, keys: k.baseAddress! + headDim, values: v.baseAddress! + headDim,
                                 pages: table, pageTokens: pageTokens, pageStride: pageStride, stride: kvDim, count: count,
                                 headDim: headDim, scale: scale, scores: &scores, scoresStride: count, rows: &rows, out: &out)
        } }
        // The C kernel gives the bits of the Swift SIMD code it replaced.
        var swiftOut = [Float](repeating: 0, count: group * headDim)
        keys.withUnsafeBufferPointer { k in values.withUnsafeBufferPointer { v in
            SwiftSIMDReference.pagedGroup(queries: queries, group: group, keys: k.baseAddress! + headDim, values: v.baseAddress! + headDim,
                                          pages: table, pageTokens: pageTokens, pageStride: pageStride, stride: kvDim, count: count,
                                          headDim: headDim, scale: scale, scores: &scores, scoresStride: count, rows: &rows, out: &swiftOut)
        } }
        #expect(out.map(\.bitPattern) == swiftOut.map(\.bitPattern))
        for h in 0..<group {
            var ref = [Float](repeating: 0, count: headDim)
            var s = [Float](repeating: 0, count: count)
            flatK.withUnsafeBufferPointer { k in flatV.withUnsafeBufferPointer { v in queries.withUnsafeBufferPointer { q in
                Attention.head(query: q.baseAddress! + h * headDim, keys: k.baseAddress! + headDim, values: v.baseAddress! + headDim,
                               stride: kvDim, count: count, headDim: headDim, scale: scale, scores: &s, out: &ref)
            } } }
            for i in 0..<headDim {
                #expect(abs(out[h * headDim + i] - ref[i]) <= 1e-5 * max(1, abs(ref[i])), "head \(h) dim \(i)")
            }
        }
    }
}

/// A sliding window over a ring of pages: positions first..<count, read through a ring table
/// whose pages were reused by earlier laps, equal the plain head over those positions.
@Suite struct WindowedAttentionTests {
    @Test(arguments: [(3, 64, 100, 20), (3, 64, 37, 36), (1, 64, 200, 16), (2, 128, 70, 33)])
    func ringWindowEqualsThePlainHeadOverTheWindow(group: Int, headDim: Int, count: Int, window: Int) {
        var rng = SystemRandomNumberGenerator()
        let pageTokens = 16, kvDim = headDim
        let ring = (window + pageTokens - 1) / pageTokens + 1
        let pageStride = pageTokens * kvDim
        let table: [Int32] = (0..<ring).map { Int32(2 * $0 + 1) }.shuffled()
        var keys = [Float16](repeating: .nan, count: (2 * ring + 1) * pageStride), values = keys
        var flatK = [Float16](repeating: 0, count: count * kvDim), flatV = flatK
        // Every position is written in order, later laps overwriting earlier ones, as a sequence would.
        for t in 0..<count {
            let at = Int(table[(t / pageTokens) % ring]) * pageStride + (t % pageTokens) * kvDim
            for i in 0..<kvDim {
                let k = Float16(Float.random(in: -2...2, using: &rng)), v = Float16(Float.random(in: -2...2, using: &rng))
                keys[at + i] = k; values[at + i] = v
                flatK[t * kvDim + i] = k; flatV[t * kvDim + i] = v
            }
        }
        let first = max(0, count - window)
        let queries = (0..<group * headDim).map { _ in Float.random(in: -1...1, using: &rng) }
        let scale = 1 / Float(headDim).squareRoot()
        var out = [Float](repeating: 0, count: group * headDim)
        var scores = [Float](repeating: 0, count: group * window)
        var rows = [Float](repeating: 0, count: 8 * headDim)
        Attention.pagedGroup(queries: queries, group: group, keys: keys, values: values, pages: table, pageTokens: pageTokens,
                             pageStride: pageStride, stride: kvDim, first: first, count: count, ring: ring, headDim: headDim,
                             scale: scale, scores: &scores, scoresStride: window, rows: &rows, out: &out)
        var swiftOut = [Float](repeating: 0, count: group * headDim)
        SwiftSIMDReference.pagedGroup(queries: queries, group: group, keys: keys, values: values, pages: table, pageTokens: pageTokens,
                                      pageStride: pageStride, stride: kvDim, first: first, count: count, ring: ring, headDim: headDim,
                                      scale: scale, scores: &scores, scoresStride: window, rows: &rows, out: &swiftOut)
        #expect(out.map(\.bitPattern) == swiftOut.map(\.bitPattern))
        for h in 0..<group {
            var ref = [Float](repeating: 0, count: headDim)
            var s = [Float](repeating: 0, count: count)
            flatK.withUnsafeBufferPointer { k in flatV.withUnsafeBufferPointer { v in queries.withUnsafeBufferPointer { q in
                Attention.head(query: q.baseAddress! + h * headDim, keys: k.baseAddress! + first * kvDim, values: v.baseAddress! + first * kvDim,
                               stride: kvDim, count: count - first, headDim: headDim, scale: scale, scores: &s, out: &ref)
            } } }
            for i in 0..<headDim {
                #expect(abs(out[h * headDim + i] - ref[i]) <= 1e-5 * max(1, abs(ref[i])), "head \(h) dim \(i)")
            }
        }
    }
}
