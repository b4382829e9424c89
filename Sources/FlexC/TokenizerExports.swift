import CFlexRun
import FlexEngine

// Tokenizer exports. Sizes follow llama.h: a short buffer gets minus the size it needs and
// nothing written; an error gets INT32_MIN (which no size can be) and a message.

/// Copies `bytes` into a caller's buffer of `capacity`, or says how much is needed.
/// `terminate` adds a NUL, counted in the size needed but not in the count returned.
private func copyOut(_ bytes: some Collection<UInt8>, to buffer: UnsafeMutablePointer<CChar>?, capacity: Int32,
                     terminate: Bool) throws(CFailure) -> Int32 {
    let need = bytes.count + (terminate ? 1 : 0)
    guard need <= Int(Int32.max) else { throw .invalid("the result is larger than 2 GiB") }
    guard capacity >= 0 else { throw .invalid("the buffer length is negative") }
    guard Int(capacity) >= need else { return -Int32(need) }
    guard let buffer else { throw .null("buffer") }
    let raw = UnsafeMutableRawPointer(buffer)
    var i = 0
    for b in bytes { raw.storeBytes(of: b, toByteOffset: i, as: UInt8.self); i += 1 }
    if terminate { raw.storeBytes(of: 0, toByteOffset: i, as: UInt8.self) }
    return Int32(bytes.count)
}

/// A size-returning export: the body's size, or INT32_MIN with the message recorded.
private func sized(_ body: () throws(CFailure) -> Int32) -> Int32 {
    do { return try body() } catch {
        _ = error.report()
        return Int32.min
    }
}

@_cdecl("flexrun_tokenize")
public func cTokenize(_ model: OpaquePointer?, _ text: UnsafePointer<CChar>?, _ textLength: Int32,
                      _ tokens: UnsafeMutablePointer<Int32>?, _ maxTokens: Int32, _ addSpecial: Bool, _ parseSpecial: Bool) -> Int32 {
    sized { () throws(CFailure) in
        let m = try FlexC.model(model).model
        guard let text else { throw .null("text") }
        let s: String
        if textLength < 0 {
            s = try string(text, "text")
        } else {
            let bytes = UnsafeRawBufferPointer(start: text, count: Int(textLength))
            guard let v = String(validating: bytes, as: UTF8.self) else { throw .invalid("text is not valid UTF-8") }
            s = v
        }
        guard maxTokens >= 0 else { throw .invalid("n_tokens_max is negative") }
        let ids = m.tokenizer.encode(s, addSpecial: addSpecial, parseSpecial: parseSpecial)
        guard ids.count <= Int(maxTokens) else { return -Int32(ids.count) }
        guard let tokens else { throw .null("tokens") }
        for (i, t) in ids.enumerated() { tokens[i] = t }
        return Int32(ids.count)
    }
}

@_cdecl("flexrun_token_to_piece")
public func cTokenToPiece(_ model: OpaquePointer?, _ token: Int32, _ buffer: UnsafeMutablePointer<CChar>?, _ length: Int32) -> Int32 {
    sized { () throws(CFailure) in
        let t = try FlexC.model(model).model.tokenizer
        guard token >= 0, Int(token) < t.vocabularySize else {
            throw .invalid("token id \(token) is outside the vocabulary (0..<\(t.vocabularySize))")
        }
        return try copyOut(t.pieceBytes(token), to: buffer, capacity: length, terminate: false)
    }
}

@_cdecl("flexrun_detokenize")
public func cDetokenize(_ model: OpaquePointer?, _ tokens: UnsafePointer<Int32>?, _ count: Int32,
                        _ text: UnsafeMutablePointer<CChar>?, _ length: Int32) -> Int32 {
    sized { () throws(CFailure) in
        let t = try FlexC.model(model).model.tokenizer
        guard count >= 0 else { throw .invalid("n_tokens is negative") }
        guard count == 0 || tokens != nil else { throw .null("tokens") }
        let ids = count == 0 ? [] : Array(UnsafeBufferPointer(start: tokens, count: Int(count)))
        if let bad = ids.first(where: { $0 < 0 || Int($0) >= t.vocabularySize }) {
            throw .invalid("token id \(bad) is outside the vocabulary (0..<\(t.vocabularySize))")
        }
        return try copyOut(t.decode(ids).utf8, to: text, capacity: length, terminate: true)
    }
}
