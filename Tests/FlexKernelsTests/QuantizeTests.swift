import Foundation
import Testing
import Glibc
@testable import FlexKernels
import FlexFormat

/// Requantization's quantizers (issue: packed block file, compression-aware requantization).
@Suite struct QuantizeTests {
    /// Floats with a heavy tail, like trained weights: Laplace(0, 1) from a seeded LCG.
    static func laplace(_ n: Int, seed: UInt64 = 7) -> [Float] {
        var s = seed
        return (0..<n).map { _ in
            s = s &* 6364136223846793005 &+ 1442695040888963407
            let u = (Double(s >> 11) + 0.5) / Double(1 << 53) - 0.5
            return Float(-(u < 0 ? -1.0 : 1.0) * log(1 - 2 * abs(u)))
        }
    }

    static func roundTrip(_ type: GGMLType, _ x: [Float], _ quantize: (UnsafePointer<Float>, UnsafeMutableRawPointer) -> Void) -> (bytes: [UInt8], back: [Float]) {
        var bytes = [UInt8](repeating: 0, count: x.count / type.blockElements * type.blockBytes)
        var back = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { src in bytes.withUnsafeMutableBytes { quantize(src.baseAddress!, $0.baseAddress!) } }
        bytes.withUnsafeBytes { b in back.withUnsafeMutableBufferPointer { ReferenceDequantize.row(type, b.baseAddress!, $0.baseAddress!, count: x.count) } }
        return (bytes, back)
    }

    /// Every element lands within about half a step of its value (f16 scales add a little), or
    /// at the end of the range: ggml's Q4_0/Q5_0 give the block's signed extreme code 0, so the
    /// opposite side stops one step short (−8d … 7d) and clips there.
    @Test(arguments: [GGMLType.q8_0, .q5_0, .q4_1, .q4_0])
    func plainQuantizersRoundToTheNearestLevel(_ type: GGMLType) {
        let x = Self.laplace(32 * 64)
        let (_, back) = Self.roundTrip(type, x) { Quantize.plain(type, $0, count: x.count, into: $1) }
        for b in 0..<64 {
            let block = x[32 * b..<32 * b + 32]
            let lo = block.min()!, hi = block.max()!
            let mx = -lo > hi ? lo : hi
            let (step, range): (Float, ClosedRange<Float>) = switch type {
            case .q8_0: (abs(mx) / 127, -abs(mx)...abs(mx))
            case .q4_0: (abs(mx) / 8, min(mx, -mx * 7 / 8)...max(mx, -mx * 7 / 8))
            case .q5_0: (abs(mx) / 16, min(mx, -mx * 15 / 16)...max(mx, -mx * 15 / 16))
            default: ((hi - lo) / 15, lo...hi)
            }
            for i in 32 * b..<32 * b + 32 {
                let clipped = max(0, range.lowerBound - x[i], x[i] - range.upperBound)
                #expect(abs(x[i] - back[i]) <= 0.6 * step + clipped, "\(type) block \(b) element \(i)")
            }
        }
    }

    /// ggml's rules on hand-checkable blocks.
    @Test func plainQuantizersFollowGGML() {
        // Q8_0: d = amax / 127, codes rounded.
        let ramp = (0..<32).map { Float($0 - 16) }
        let (q8, _) = Self.roundTrip(.q8_0, ramp) { Quantize.plain(.q8_0, $0, count: 32, into: $1) }
        #expect(Float(Float16(bitPattern: UInt16(q8[0]) | UInt16(q8[1]) << 8)) == Float(Float16(16 / 127 as Float)))
        #expect(Int8(bitPattern: q8[2]) == -127 && Int8(bitPattern: q8[2 + 16]) == 0 && Int8(bitPattern: q8[2 + 17]) == 8)
        // Q4_0: the signed extreme maps to code 0 (d = max / −8); here −16 → 0, 0 → 8.
        let (q4, _) = Self.roundTrip(.q4_0, ramp) { Quantize.plain(.q4_0, $0, count: 32, into: $1) }
        #expect(Float(Float16(bitPattern: UInt16(q4[0]) | UInt16(q4[1]) << 8)) == 2)
        #expect(q4[2] & 0xF == 0 && q4[2] >> 4 == 8)
        // Q4_1: min and (max − min) / 15.
        let (q41, _) = Self.roundTrip(.q4_1, ramp) { Quantize.plain(.q4_1, $0, count: 32, into: $1) }
        #expect(Float(Float16(bitPattern: UInt16(q41[2]) | UInt16(q41[3]) << 8)) == -16)
        #expect(q41[4] & 0xF == 0 && q41[4 + 15] >> 4 == 15)
    }

    static func entropy(ofQ8 bytes: [UInt8]) -> Double {
        var hist = [Int](repeating: 0, count: 256)
        for b in 0..<bytes.count / 34 { for i in 0..<32 { hist[Int(bytes[34 * b + 2 + i])] += 1 } }
        let n = Double(bytes.count / 34 * 32)
        return hist.filter { $0 > 0 }.reduce(0) { $0 - Double($1) / n * log2(Double($1) / n) }
    }

    static func relativeRMSE(_ x: [Float], _ y: [Float]) -> Double {
        let e = zip(x, y).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
        return (e / x.reduce(0.0) { $0 + Double($1 * $1) }).squareRoot()
    }

    /// λ = 0 is ggml's Q8_0 byte for byte; λ > 0 buys lower code entropy with bounded error, near
    /// the high-rate prediction (Δ/√12 relative to the RMS, Δ = √(6λ/ln 2)).
    @Test func compressionAwareQ8TradesErrorForEntropy() {
        let x = Self.laplace(32 * 4096)
        let plain = Self.roundTrip(.q8_0, x) { Quantize.plain(.q8_0, $0, count: x.count, into: $1) }
        let zero = Self.roundTrip(.q8_0, x) { Quantize.CompressionAware(lambda: 0).q8_0($0, count: x.count, into: $1) }
        #expect(zero.bytes == plain.bytes)
        let ca = Self.roundTrip(.q8_0, x) { Quantize.CompressionAware(lambda: 0.002).q8_0($0, count: x.count, into: $1) }
        let (h0, h1) = (Self.entropy(ofQ8: plain.bytes), Self.entropy(ofQ8: ca.bytes))
        #expect(h1 < h0 - 1.5, "code entropy \(h0) → \(h1) bits")
        let predicted = (6 * 0.002 / M_LN2).squareRoot() / 12.0.squareRoot()
        let error = Self.relativeRMSE(x, ca.back)
        #expect(error > 0.5 * predicted && error < 1.3 * predicted, "relative RMSE \(error), predicted \(predicted)")
        #expect(Self.relativeRMSE(x, plain.back) < 0.3 * error)
    }
}
