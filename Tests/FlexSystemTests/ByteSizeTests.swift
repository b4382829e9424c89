import Foundation
import Testing
import FlexSystem

@Suite struct ByteSizeTests {
    @Test(arguments: [
        ("512M", 512 << 20), ("4G", 4 << 30), ("1.5GiB", 3 << 29), ("100MB", 100 << 20),
        ("1048576", 1_048_576), ("64k", 64 << 10), (" 2 g ", 2 << 30), ("1T", 1 << 40), ("700b", 700),
    ])
    func parses(_ text: String, _ bytes: Int) throws {
        #expect(try ByteSize(parsing: text).bytes == bytes)
    }

    @Test(arguments: ["", "G", "4X", "-1G", "1.2.3G", "abc", "0", "1e3", "99999999999T", "4 G B"])
    func rejects(_ text: String) {
        #expect(throws: ByteSize.ParseError.self) { try ByteSize(parsing: text) }
    }

    @Test func formatsInBinaryUnits() {
        #expect(ByteSize.format(512) == "512 B")
        #expect(ByteSize.format(3 << 29) == "1.5 GiB")
        #expect(ByteSize.format(17 << 20) == "17.0 MiB")
        #expect(ByteSize.format(1536, digits: 3) == "1.500 KiB")
    }

    /// A cap just below the minimum printed both as "17.1 MiB" ("memory limit 17.1 MiB is too
    /// small … at least 17.1 MiB"): the pair gets decimals until they differ, the minimum rounded
    /// up so that the printed figure is enough.
    @Test func aLimitAndItsMinimumReadDifferently() throws {
        // 17.1M as the parser reads it, and a minimum 0.037 MiB above.
        let limit = try ByteSize(parsing: "17.1M").bytes, minimum = Int(17.137 * 1048576)
        #expect(ByteSize.format(limit) == ByteSize.format(minimum))
        let (l, m) = ByteSize.format(limit: limit, below: minimum)
        #expect(l == "17.10 MiB" && m == "17.14 MiB")
        #expect(try ByteSize(parsing: "17.14M").bytes >= minimum)
        #expect(ByteSize.format(limit: 16 << 20, below: minimum) == ("16.0 MiB", "17.2 MiB"))
        let exact = (17 << 20) + 5
        #expect(ByteSize.format(limit: exact - 1, below: exact) == ("\(exact - 1) B", "\(exact) B"))
    }
}

@Suite struct AlignedBufferTests {
    @Test func isAlignedAndZeroed() {
        let b = AlignedBuffer<Float>(count: 1000)
        #expect(Int(bitPattern: b.pointer) % 64 == 0)
        #expect(b.buffer.allSatisfy { $0 == 0 })
        #expect(b.byteCount == 4000)
    }
}
