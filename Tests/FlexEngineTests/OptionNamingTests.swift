import Testing
@testable import FlexEngine

/// Library errors name the options a library user sets (fields such as `memoryLimit`), not the
/// CLI's flags; each front end renders the fields in its own words through
/// `EngineError.message(naming:)`.
@Suite(.enabled(if: Fixtures.smolLM2Available)) struct OptionNamingTests {
    static func refusal(_ change: (inout EngineOptions) -> Void) throws -> EngineError {
        var o = EngineOptions(modelPath: try Fixtures.requireSmolLM2())
        o.followCgroupLimit = false
        change(&o)
        do {
            _ = try Engine(options: o)
        } catch {
            return error
        }
        Issue.record("the options were accepted")
        throw EngineError.emptyPrompt
    }

    /// An option set wrong, and the field its refusal must name.
    enum Mistake: String, CaseIterable, Sendable {
        case threads, maxSequences, maxDraft, contextLength, memoryLimit, pruneOrder

        func apply(_ o: inout EngineOptions) {
            switch self {
            case .threads: o.threads = 0
            case .maxSequences: o.maxSequences = 0
            case .maxDraft: o.maxDraft = 9
            case .contextLength: o.contextLength = 0
            case .memoryLimit: o.memoryLimit = 1 << 20
            case .pruneOrder: o.prune = .fit; o.memoryLimit = 8 << 20
            }
        }
    }

    @Test(arguments: Mistake.allCases)
    func refusalNamesTheField(_ mistake: Mistake) throws {
        let error = try Self.refusal(mistake.apply)
        let field = mistake.rawValue, text = error.description
        #expect(text.contains("`\(field)`"), "\(text)")
        #expect(!text.contains("--"), "a CLI flag in a library error: \(text)")
        let renamed = error.message(naming: { "<\($0.rawValue)>" })
        #expect(renamed.contains("<\(field)>") && !renamed.contains("`"), "\(renamed)")
    }
}
