import FlexEngine
import Foundation

/// OpenAI's request and response bodies, as far as FlexRun serves them: `/v1/chat/completions`,
/// `/v1/completions` and `/v1/models`. Field names are OpenAI's (snake_case). Unknown fields are
/// ignored, as OpenAI's own server does for fields it has retired; a known field of the wrong
/// type is a 400 naming the field (`JSONDecoder`'s type checks, mapped in ``APIError``).
enum OpenAI {
    /// `content` is a string, or an array of parts of which the text parts are joined (the
    /// newer clients send `[{"type": "text", "text": …}]`).
    struct Message: Decodable {
        let role: String
        let content: String

        enum Keys: String, CodingKey { case role, content }
        struct Part: Decodable {
            let type: String
            let text: String?
        }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Keys.self)
            role = try c.decode(String.self, forKey: .role)
            if let s = try? c.decode(String.self, forKey: .content) {
                content = s
            } else if c.contains(.content), try c.decodeNil(forKey: .content) {
                content = ""
            } else {
                let parts = try c.decode([Part].self, forKey: .content)
                guard parts.allSatisfy({ $0.type == "text" }) else {
                    throw APIError.invalid("only text content parts are supported", param: "messages")
                }
                content = parts.compactMap(\.text).joined()
            }
        }
    }

    /// `stop` is a string or an array of up to 4 strings.
    struct Stop: Decodable {
        let strings: [String]
        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) { strings = [s] } else { strings = try c.decode([String].self) }
        }
    }

    /// The sampling fields both endpoints share; llama.cpp's `top_k`, `min_p` and
    /// `repeat_penalty` are accepted too, as llama-server does.
    struct Sampling: Decodable {
        let model: String?
        let max_tokens: Int?
        let max_completion_tokens: Int?
        let temperature: Double?
        let top_p: Double?
        let top_k: Int?
        let min_p: Double?
        let repeat_penalty: Double?
        let seed: Int64?
        let stop: Stop?
        let stream: Bool?
        let n: Int?
        let stream_options: StreamOptions?
    }

    struct StreamOptions: Decodable {
        let include_usage: Bool?
    }

    struct ChatRequest: Decodable {
        let messages: [Message]
    }

    struct CompletionRequest: Decodable {
        let prompt: Prompt
        let echo: Bool?
    }

    /// `prompt` is a string, or an array holding one string.
    struct Prompt: Decodable {
        let text: String
        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) { text = s; return }
            let list = try c.decode([String].self)
            guard list.count == 1 else { throw APIError.invalid("prompt: exactly one prompt per request is supported", param: "prompt") }
            text = list[0]
        }
    }

    struct Usage: Encodable {
        let prompt_tokens: Int
        let completion_tokens: Int
        let total_tokens: Int
        init(prompt: Int, completion: Int) {
            prompt_tokens = prompt
            completion_tokens = completion
            total_tokens = prompt + completion
        }
    }

    struct ChatMessageOut: Encodable {
        let role: String
        let content: String
    }

    struct ChatChoice: Encodable {
        let index: Int
        let message: ChatMessageOut
        let finish_reason: String
    }

    struct ChatCompletion: Encodable {
        let id: String
        let object = "chat.completion"
        let created: Int
        let model: String
        let choices: [ChatChoice]
        let usage: Usage
    }

    struct Delta: Encodable {
        let role: String?
        let content: String?
    }

    struct ChunkChoice: Encodable {
        let index: Int
        let delta: Delta
        let finish_reason: String?
        enum CodingKeys: String, CodingKey { case index, delta, finish_reason }
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(index, forKey: .index)
            try c.encode(delta, forKey: .delta)
            try c.encode(finish_reason, forKey: .finish_reason)   // null until the last chunk, as OpenAI sends it
        }
    }

    struct ChatChunk: Encodable {
        let id: String
        let object = "chat.completion.chunk"
        let created: Int
        let model: String
        let choices: [ChunkChoice]
        let usage: Usage?
    }

    struct TextChoice: Encodable {
        let text: String
        let index: Int
        let finish_reason: String?
        enum CodingKeys: String, CodingKey { case text, index, finish_reason, logprobs }
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(text, forKey: .text)
            try c.encode(index, forKey: .index)
            try c.encode(finish_reason, forKey: .finish_reason)
            try c.encodeNil(forKey: .logprobs)
        }
    }

    struct TextCompletion: Encodable {
        let id: String
        let object = "text_completion"
        let created: Int
        let model: String
        let choices: [TextChoice]
        let usage: Usage?
    }

    struct ModelEntry: Encodable {
        let id: String
        let object = "model"
        let created: Int
        let owned_by = "flexrun"
    }

    struct ModelList: Encodable {
        let object = "list"
        let data: [ModelEntry]
    }

    /// OpenAI's finish reasons: "stop" (end of generation or a stop string), "length" (the token
    /// limit or a full context).
    static func finishReason(_ r: GenerationStats.StopReason, stopString: Bool) -> String {
        if stopString { return "stop" }
        switch r {
        case .endOfGeneration: return "stop"
        case .maxTokens, .contextFull: return "length"
        case .cancelled: return "stop"
        case .error: return "error"
        }
    }
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with its HTTP status.
struct APIError: Error {
    let status: Int
    let message: String
    let type: String
    let param: String?
    let code: String?

    static func invalid(_ message: String, param: String? = nil, code: String? = nil) -> APIError {
        APIError(status: 400, message: message, type: "invalid_request_error", param: param, code: code)
    }

    /// A decoding failure as one line naming the field (`messages[0].content: expected a string`).
    static func decoding(_ error: any Error) -> APIError {
        if let e = error as? APIError { return e }
        func path(_ keys: [any CodingKey]) -> String {
            keys.reduce("") { s, k in
                if let i = k.intValue { return s + "[\(i)]" }
                return s.isEmpty ? k.stringValue : s + "." + k.stringValue
            }
        }
        guard let d = error as? DecodingError else { return .invalid("the body is not valid JSON") }
        switch d {
        case .typeMismatch(let type, let c):
            return .invalid("\(path(c.codingPath)): expected \(Self.name(of: type))", param: path(c.codingPath))
        case .valueNotFound(let type, let c):
            return .invalid("\(path(c.codingPath)): expected \(Self.name(of: type)), got null", param: path(c.codingPath))
        case .keyNotFound(let key, let c):
            let p = path(c.codingPath + [key])
            return .invalid("\(p) is required", param: p)
        case .dataCorrupted(let c):
            return c.codingPath.isEmpty ? .invalid("the body is not valid JSON") : .invalid("\(path(c.codingPath)): \(c.debugDescription)", param: path(c.codingPath))
        @unknown default:
            return .invalid("the body could not be read")
        }
    }

    static func name(of type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Int.Type, is Int64.Type: "an integer"
        case is Double.Type: "a number"
        case is Bool.Type: "true or false"
        default: type is any Collection.Type ? "an array" : "an object"
        }
    }

    var json: String {
        struct Body: Encodable {
            struct Inner: Encodable {
                let message: String
                let type: String
                let param: String?
                let code: String?
                enum CodingKeys: String, CodingKey { case message, type, param, code }
                func encode(to encoder: any Encoder) throws {
                    var c = encoder.container(keyedBy: CodingKeys.self)
                    try c.encode(message, forKey: .message)
                    try c.encode(type, forKey: .type)
                    try c.encode(param, forKey: .param)
                    try c.encode(code, forKey: .code)
                }
            }
            let error: Inner
        }
        let data = (try? JSONEncoder.api.encode(Body(error: .init(message: message, type: type, param: param, code: code)))) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}

extension JSONEncoder {
    /// Keys sorted (stable output for tests and diffs), slashes unescaped.
    static var api: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }
}
