import FlexSystem

/// Why a GGUF file was refused. Every case renders as one line that names the file position or
/// tensor, so a user with a corrupt download knows what is wrong without a debugger.
public enum GGUFError: Error, CustomStringConvertible, Sendable, Equatable {
    case io(SystemError)
    case badMagic(found: UInt32)
    case unsupportedVersion(UInt32)
    case truncated(context: String, offset: Int)
    case malformed(context: String, offset: Int, reason: String)
    case tensorOutOfBounds(name: String, offset: Int, bytes: Int, available: Int)
    case unsupportedTensorType(name: String, type: String)
    case badTensorShape(name: String, reason: String)
    case missingTensor(String)
    case missingKey(String)
    case badKey(String, reason: String)
    case blockFile(BlockFileError)

    public var description: String {
        switch self {
        case .io(let e): return e.description
        case .badMagic(let m):
            let bytes = withUnsafeBytes(of: m.littleEndian) { Array($0) }
            let shown = bytes.map { (32...126).contains($0) ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16) }.joined()
            return "not a GGUF file: magic is '\(shown)', expected 'GGUF'"
        case .unsupportedVersion(let v): return "unsupported GGUF version \(v) (FlexRun reads versions 2 and 3)"
        case .truncated(let c, let o): return "truncated GGUF file: \(c) at byte \(o) runs past the end of the file"
        case .malformed(let c, let o, let r): return "malformed GGUF file: \(c) at byte \(o): \(r)"
        case .tensorOutOfBounds(let n, let o, let b, let a):
            return "tensor '\(n)': data at offset \(o) of \(b) bytes runs past the end of the file (\(a) bytes of tensor data available)"
        case .unsupportedTensorType(let n, let t): return "tensor '\(n)': unsupported tensor type \(t)"
        case .badTensorShape(let n, let r): return "tensor '\(n)': \(r)"
        case .missingTensor(let n): return "model is missing tensor '\(n)'"
        case .missingKey(let k): return "model metadata is missing '\(k)'"
        case .badKey(let k, let r): return "model metadata '\(k)': \(r)"
        case .blockFile(let e): return e.description
        }
    }
}
