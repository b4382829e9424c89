/// A GGUF metadata value. Integers of every width are widened to `Int64`/`UInt64`, floats to
/// `Double`: callers ask for what they mean ("an unsigned count") and get a typed answer.
public enum GGUFValue: Sendable, Equatable {
    case unsigned(UInt64)
    case signed(Int64)
    case float(Double)
    case bool(Bool)
    case string(String)
    case array(GGUFArray)

    /// The value as a non-negative integer, whatever integer type stored it.
    public var asInt: Int? {
        switch self {
        case .unsigned(let v): return v <= UInt64(Int.max) ? Int(v) : nil
        case .signed(let v): return Int(v)
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    public var asDouble: Double? {
        switch self {
        case .float(let v): return v
        case .unsigned(let v): return Double(v)
        case .signed(let v): return Double(v)
        default: return nil
        }
    }

    public var asString: String? { if case .string(let s) = self { return s } else { return nil } }
    public var asBool: Bool? {
        switch self {
        case .bool(let b): return b
        case .unsigned(let v): return v != 0
        case .signed(let v): return v != 0
        default: return nil
        }
    }
}

/// Homogeneous GGUF arrays, kept typed so a 49k-entry vocabulary is one `[String]`.
public enum GGUFArray: Sendable, Equatable {
    case strings([String])
    case integers([Int64])
    case floats([Double])
    case bools([Bool])
    case arrays([GGUFArray])

    public var count: Int {
        switch self {
        case .strings(let a): return a.count
        case .integers(let a): return a.count
        case .floats(let a): return a.count
        case .bools(let a): return a.count
        case .arrays(let a): return a.count
        }
    }
}
