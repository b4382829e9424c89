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
