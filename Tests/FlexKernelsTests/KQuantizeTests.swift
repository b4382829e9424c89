import Foundation
import Testing
@testable import FlexKernels
import FlexFormat

/// The quantizers against ggml's own reference quantizers (`quantize_row_*_ref`), bit for bit,
/// and the K-quants' round trip through the reference dequantizer.
@Suite struct KQuantizeTests {
    /// Seeded floats and ggml's blocks of them, written by `Tools/kquant_fixture.py` from the peer
    /// llama-cpp-python's libggml-base (see the script for the regimes it covers).
    struct GGMLFixture {
        var floats: [Float] = []
        var blocks: [GGMLType: [UInt8]] = [:]

        static let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/ggml-quants.bin")

        static func load() throws -> GGMLFixture {
            let data = try Data(contentsOf: url)
            var f = GGMLFixture()
            try data.withUnsafeBytes { raw in
                func u32(_ at: Int) -> Int { Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt32.self))) }
                guard raw.count > 8, raw.load(as: UInt32.self) == 0x4651_4747 else { throw CocoaError(.fileReadCorruptFile) }
                let n = u32(4)
                f.floats = (0..<n).map { Float(bitPattern: UInt32(u32(8 + 4 * $0))) }
                var at = 8 + 4 * n
                while at + 8 <= raw.count {
                    let type = GGMLType(rawValue: UInt32(u32(at)))!, count = u32(at + 4)
                    f.blocks[type] = Array(raw[at + 8..<at + 8 + count])
                    at += 8 + count
                }
            }
            return f
        }
    }

    /// Every target type gives ggml's bytes for every block of the fixture (zero, constant,
    /// one-signed, outlier, tiny and tied blocks included).
    @Test(arguments: Quantize.targets)
    func quantizersAreGGMLsBitForBit(_ type: GGMLType) throws {
        let fixture = try GGMLFixture.load()
        let expected = try #require(fixture.blocks[type], "fixture lacks \(type): rerun Tools/kquant_fixture.py")
        let x = fixture.floats
        let (bytes, _) = QuantizeTests.roundTrip(type, x) { Quantize.plain(type, $0, count: x.count, into: $1) }
        #expect(bytes.count == expected.count)
        let differing = (0..<bytes.count / type.blockBytes).filter {
            bytes[$0 * type.blockBytes..<($0 + 1) * type.blockBytes] != expected[$0 * type.blockBytes..<($0 + 1) * type.blockBytes]
        }
        #expect(differing.isEmpty, "\(type): blocks \(differing) differ from ggml's")
    }

    /// Round trip through ``ReferenceDequantize``: the relative RMSE on Laplace weights halves
    /// with each bit (measured: Q4_K 0.0861, Q5_K 0.0434, Q6_K 0.0217; Q5_1 0.0451, Q5_0 0.0538:
    /// Q5_K's grid-searched scale and min per 32 weights beat Q5_1's range at the same width).
    @Test(arguments: [(GGMLType.q4_K, 0.095), (.q5_K, 0.048), (.q6_K, 0.024), (.q5_1, 0.05), (.q5_0, 0.06)])
    func roundTripErrorFallsWithTheBitWidth(_ type: GGMLType, _ bound: Double) {
        let x = QuantizeTests.laplace(256 * 64)
        let (_, back) = QuantizeTests.roundTrip(type, x) { Quantize.plain(type, $0, count: x.count, into: $1) }
        let e = QuantizeTests.relativeRMSE(x, back)
        #expect(e < bound && e > 0.8 * bound, "\(type): relative RMSE \(e)")
    }

    /// ggml's `nearest_int` rounds ties to even, like the FPU.
    @Test func nearestIntRoundsTiesToEven() {
        #expect([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, -7.6].map { Quantize.nearestInt(Float($0)) } == [0, 2, 2, 0, -2, 2, -8])
    }
}
