/// An option a library error can point the caller at, by its field in ``EngineOptions`` or
/// ``GenerateParameters``.
///
/// Why a type and not text: the library's users set fields, the CLI's users pass flags and C
/// callers fill params structs, so an error that says "raise --mem-limit" is wrong for two of the
/// three. Messages interpolate these cases, which read as the field's name in backticks; each front end
/// renders them in its own words with ``EngineError/message(naming:)`` (the CLI's switch over
/// this enum is exhaustive, so a new field cannot go unnamed there).
public enum OptionField: String, CaseIterable, Sendable, CustomStringConvertible {
    case memoryLimit, contextLength, threads, maxSequences, maxDraft
    case prune, pruneOrder, prunePolicy, minTokensPerSecond, throughput, residentOnly
    case skip, chat

    public var description: String { "`\(rawValue)`" }
}

extension EngineError {
    /// The message with every ``OptionField`` spelled by `name` (a CLI flag, a C params field).
    public func message(naming name: (OptionField) -> String) -> String {
        var text = description
        for field in OptionField.allCases { text = text.replacing(field.description, with: name(field)) }
        return text
    }
}
