import Foundation
import Glibc
import Testing
@testable import FlexEngine
@testable import FlexSystem

/// Each way of reading streamed weights, forced, gives the ids of the model run from memory:
/// io_uring (which `auto` would otherwise quietly replace with pread where it is refused), pread,
/// and buffered reads on a filesystem that refuses O_DIRECT.
@Suite struct StageReaderTests {
    static let model = Fixtures.url("synth/synth-llama-mixed.gguf").path

    /// Options under a cap halfway between the streaming minimum and everything resident.
    static func streaming(_ path: String, backend: ReadBackend) throws -> EngineOptions {
        let probe = try Engine(options: StreamingTests.options(path, limit: 1 << 40, context: 64))
        let minimum = MemoryPlan.minimumCap(probe.plan!.inputs), full = probe.plan!.totalBytes
        var options = StreamingTests.options(path, limit: minimum + (full - minimum) / 2, context: 64)
        options.readBackend = backend
        return options
    }

    static func ids(_ engine: Engine) throws -> [Int32] { try StreamingTests.greedyIDs(engine, "The quick brown fox", tokens: 16) }

    static let uringRefusal = Platform.ioUringRefusal

    @Test(.enabled(if: uringRefusal == nil, Comment(rawValue: "skipped: this kernel refuses io_uring (\(uringRefusal ?? ""))")))
    func forcedURingGivesThePreadIDs() throws {
        let reference = try Self.ids(Engine(options: StreamingTests.options(Self.model, limit: nil, context: 64)))
        let uring = try Engine(options: Self.streaming(Self.model, backend: .uring))
        #expect(uring.plan.map { !$0.isFullyResident } == true, "the weights must stream for this test")
        #expect(uring.offloadSummary?.reader == "io_uring")
        let pread = try Engine(options: Self.streaming(Self.model, backend: .pread))
        #expect(pread.offloadSummary?.reader.hasPrefix("pread") == true)
        #expect(try Self.ids(uring) == reference)
        #expect(try Self.ids(pread) == reference)
        // Where the kernel takes io_uring, auto must use it, not fall back unnoticed.
        #expect(try Engine(options: Self.streaming(Self.model, backend: .auto)).offloadSummary?.reader == "io_uring")
    }

    @Test(.enabled(if: BufferedFilesystem.directory != nil,
                   "skipped: no filesystem that refuses O_DIRECT here (tmpfs takes it since Linux 6.6; mounting a ramfs needs root)"))
    func bufferedFallbackStreamsTheSameIDs() throws {
        let dir = try #require(BufferedFilesystem.directory)
        let copy = dir + "/synth-\(getpid()).gguf"
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: Self.model, toPath: copy)
        defer { try? FileManager.default.removeItem(atPath: copy) }
        let reference = try Self.ids(Engine(options: StreamingTests.options(Self.model, limit: nil, context: 64)))
        let direct = try Engine(options: Self.streaming(Self.model, backend: .auto))
        #expect(direct.offloadSummary?.directIO == true)
        for backend in [ReadBackend.auto, .pread] {
            let buffered = try Engine(options: Self.streaming(copy, backend: backend))
            #expect(buffered.plan.map { !$0.isFullyResident } == true, "the weights must stream for this test")
            #expect(buffered.offloadSummary?.directIO == false, "\(backend): O_DIRECT was taken on \(dir)")
            #expect(try Self.ids(buffered) == reference, "\(backend)")
        }
    }
}

/// A directory on a filesystem that refuses O_DIRECT: /dev/shm where tmpfs still does (before
/// Linux 6.6), else a ramfs mounted for the test process (root), unmounted at exit; nil if neither.
enum BufferedFilesystem {
    static let directory: String? = {
        if refusesDirectIO("/dev/shm") { return "/dev/shm" }
        guard geteuid() == 0 else { return nil }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("flexrun-ramfs-\(getpid())").path
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        guard run("/bin/mount", ["-t", "ramfs", "ramfs", dir]) else { try? FileManager.default.removeItem(atPath: dir); return nil }
        mounted = dir
        atexit {
            // An io_uring lets go of its file a moment after it is closed (the kernel tears rings
            // down on a workqueue): until then the mount is busy.
            guard let d = BufferedFilesystem.mounted else { return }
            for _ in 0..<100 {
                if BufferedFilesystem.run("/bin/umount", [d]) { break }
                usleep(100_000)
            }
            rmdir(d)
        }
        return refusesDirectIO(dir) ? dir : nil
    }()
    nonisolated(unsafe) static var mounted: String?

    static func refusesDirectIO(_ dir: String) -> Bool {
        let probe = dir + "/flexrun-odirect-probe-\(getpid())"
        guard FileManager.default.createFile(atPath: probe, contents: Data(count: 4096)) else { return false }
        defer { unlink(probe) }
        do {
            let file = try DirectFile(path: probe)
            return !file.isDirect
        } catch { return false }
    }

    static func run(_ tool: String, _ args: [String]) -> Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        p.standardOutput = Foundation.FileHandle.nullDevice
        p.standardError = Foundation.FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }
}
