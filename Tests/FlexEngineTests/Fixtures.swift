import Foundation
import Testing
import FlexEngine

/// Locates the shared reference fixtures (`../shared/fixtures` beside the repository) and the
/// default model in the local model cache. Tests never download anything.
enum Fixtures {
    static let packageRoot: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static var root: URL {
        if let env = ProcessInfo.processInfo.environment["FLEXRUN_FIXTURES"] { return URL(fileURLWithPath: env) }
        return packageRoot.deletingLastPathComponent().appendingPathComponent("shared/fixtures")
    }

    static func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }

    static func json(_ relative: String) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(contentsOf: url(relative)))
    }

    /// The default model, or nil if it has not been fetched (`Tools/fetch-model.sh`).
    /// With FLEXRUN_REQUIRE_MODEL=1 (set by CI) a missing model is a test failure, not a skip.
    static var smolLM2: String? {
        let path = ModelCache.defaultModelPath
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }

    /// Gemma 3 270M, or nil if it has not been fetched (`Tools/fetch-model.sh gemma3`).
    static var gemma3: String? {
        let path = ModelCache.gemma3ModelPath
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }
    static var gemma3Available: Bool { gemma3 != nil || modelRequired }

    static func requireGemma3() throws -> String {
        guard let p = gemma3 else {
            Issue.record("Gemma 3 missing: run Tools/fetch-model.sh gemma3")
            throw CancellationError()
        }
        return p
    }

    static var modelRequired: Bool { ProcessInfo.processInfo.environment["FLEXRUN_REQUIRE_MODEL"] == "1" }

    /// Whether a test that needs the real model should run: it runs when the model exists, and
    /// also when CI requires it (so that its absence fails loudly instead of skipping).
    static var smolLM2Available: Bool { smolLM2 != nil || modelRequired }

    static func requireSmolLM2() throws -> String {
        guard let p = smolLM2 else {
            Issue.record("default model missing: run Tools/fetch-model.sh")
            throw CancellationError()
        }
        return p
    }

    static func floats(_ relative: String) throws -> [Float] {
        let data = try Data(contentsOf: url(relative))
        return data.withUnsafeBytes { raw in
            (0..<data.count / 4).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
    }
}

/// One golden encoding from llama.cpp (`llama_tokenize`, add_special and parse_special on).
struct TokenizerCase: Sendable, CustomTestStringConvertible {
    let text: String
    let ids: [Int32]
    var testDescription: String { text.debugDescription }

    /// The cases of a `{"cases": [{"text", "ids"}]}` fixture; empty when it is missing (the
    /// suites that use them check the count).
    static func load(_ relative: String) -> [TokenizerCase] {
        guard let json = try? Fixtures.json(relative) as? [String: Any],
              let cases = json["cases"] as? [[String: Any]] else { return [] }
        return cases.map { TokenizerCase(text: $0["text"] as! String, ids: ($0["ids"] as! [Int]).map(Int32.init)) }
    }
}
