import Foundation
import Testing
@testable import FlexSystem

/// What `--stats` puts beside peak RSS: the counter a memory cap is held to.
@Suite struct ChargedMemoryTests {
    /// A group of this process alone, or one with a limit, reports its own peak; a shared group
    /// without a limit (a desktop session, a CI container) says nothing about this process, so
    /// its anonymous memory and model pages are reported instead.
    @Test func choosesTheCounterTheCapIsHeldTo() {
        let peak = (bytes: 91_660_288, file: "memory.max_usage_in_bytes")
        let alone = ChargedMemory.choose(cgroupPeak: peak, processes: 1, limit: nil, anonymous: 80 << 20, modelFilePages: 0)
        #expect(alone == ChargedMemory(bytes: 91_660_288, source: .cgroupPeak(file: "memory.max_usage_in_bytes", processes: 1, limit: nil)))
        let limited = ChargedMemory.choose(cgroupPeak: peak, processes: 3, limit: 100 << 20, anonymous: 80 << 20, modelFilePages: 0)
        #expect(limited?.source == .cgroupPeak(file: "memory.max_usage_in_bytes", processes: 3, limit: 100 << 20))
        #expect(limited?.summary.contains("of its 100.0 MiB limit") == true && limited?.summary.contains("3 processes") == true)
        let shared = ChargedMemory.choose(cgroupPeak: (4 << 30, "memory.peak"), processes: 12, limit: nil, anonymous: 80 << 20,
                                          modelFilePages: 2 << 20)
        #expect(shared == ChargedMemory(bytes: 82 << 20, source: .process(anonymous: 80 << 20, modelFilePages: 2 << 20)))
        #expect(ChargedMemory.choose(cgroupPeak: nil, processes: nil, limit: nil, anonymous: 1 << 20, modelFilePages: nil)?.bytes == 1 << 20)
        #expect(ChargedMemory.choose(cgroupPeak: nil, processes: nil, limit: nil, anonymous: nil, modelFilePages: nil) == nil)
    }

    @Test(arguments: [CgroupMemory.Version.v1, .v2])
    func readsTheGroupsPeakAndProcesses(version: CgroupMemory.Version) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flexrun-cgroup-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let group = CgroupMemory(version: version, directory: dir)
        #expect(group.peak == nil && group.processCount == nil)
        let file = version == .v1 ? "memory.max_usage_in_bytes" : "memory.peak"
        try "91660288\n".write(toFile: dir + "/" + file, atomically: true, encoding: .utf8)
        try "4242\n4243\n".write(toFile: dir + "/cgroup.procs", atomically: true, encoding: .utf8)
        #expect(group.peak?.bytes == 91_660_288 && group.peak?.file == file)
        #expect(group.processCount == 2)
    }

    /// The model file's pages are found by path in smaps: a mapping of a file of 3 pages, touched.
    @Test func countsTheResidentPagesOfAMappedFile() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("flexrun-mapped-\(UUID().uuidString)").path
        try Data(repeating: 1, count: 3 * 4096).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(Platform.residentFileBytes(mappedFrom: path) == 0)
        let file = try FlexSystem.FileHandle(readingFrom: path)
        let region = try MappedRegion(mapping: file)
        var sum = 0
        for i in stride(from: 0, to: 3 * 4096, by: 4096) { sum += Int(region.base.load(fromByteOffset: i, as: UInt8.self)) }
        #expect(sum == 3)
        #expect(Platform.residentFileBytes(mappedFrom: path) == 3 * 4096)
    }
}
