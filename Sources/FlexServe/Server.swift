import FlexEngine
import FlexSystem
import Foundation
import Hummingbird
import Logging
import Synchronization

/// What `flexrun serve` is started with.
public struct ServeOptions: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    /// When set, `/v1/*` and `/metrics` need `Authorization: Bearer KEY` (compared in constant time).
    public var apiKey: String?
    /// Largest request body read; larger ones get 413.
    public var maxBodyBytes = 1 << 20
    /// Requests that may wait for a free sequence slot; beyond, 503.
    public var queueLimit = 64
    /// The model's name in `/v1/models` and in responses.
    public var modelID: String
    public init(modelID: String) { self.modelID = modelID }
}

/// An OpenAI-compatible HTTP server over one engine (Hummingbird; docs/ARCHITECTURE.md says why).
///
/// Requests become sequences of the ``Scheduler``'s session; this type only speaks HTTP: routing,
/// the API key, body limits, OpenAI's JSON and server-sent events, and errors in OpenAI's shape.
public final class Server: Sendable {
    public let engine: Engine
    public let scheduler: Scheduler
    public let options: ServeOptions
    let statuses = Mutex<[Int: Int]>([:])
    let started = Date()

    public init(engine: Engine, parallel: Int, options: ServeOptions) {
        self.engine = engine
        self.options = options
        scheduler = Scheduler(engine: engine, parallel: parallel, queueLimit: options.queueLimit)
    }

    /// Serves until the task is cancelled or the process gets SIGINT/SIGTERM (Hummingbird's
    /// service lifecycle shuts down gracefully). `onReady` runs once the socket listens, with the
    /// port bound (the real one when `port` is 0).
    public func run(onReady: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        let app = Application(
            responder: Responder(server: self),
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: "flexrun"),
            onServerRunning: { channel in await onReady(channel.localAddress?.port ?? 0) },
            logger: {
                var l = Logger(label: "flexrun.serve")
                l.logLevel = .warning
                return l
            }())
        try await app.runService()
        scheduler.stop()
    }

    struct Responder: HTTPResponder {
        typealias Context = BasicRequestContext
        let server: Server
        func respond(to request: Request, context: Context) async throws -> Response {
            let response: Response
            do { response = try await server.route(request) } catch let e as APIError {
                response = server.errorResponse(e)
            } catch {
                response = server.errorResponse(APIError(status: 500, message: "\(error)", type: "server_error", param: nil, code: nil))
            }
            server.statuses.withLock { $0[response.status.code, default: 0] += 1 }
            return response
        }
    }

    func route(_ request: Request) async throws -> Response {
        var path = request.uri.path
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        let get = request.method == .get, post = request.method == .post
        if path == "/health" {
            guard get else { throw methodNotAllowed(path) }
            return json(#"{"status":"ok"}"#)
        }
        if path.hasPrefix("/v1/") || path == "/metrics" { try authorize(request) }
        switch path {
        case "/metrics":
            guard get else { throw methodNotAllowed(path) }
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: metricsText())))
        case "/v1/models":
            guard get else { throw methodNotAllowed(path) }
            return try json(OpenAI.ModelList(data: [modelEntry]))
        case "/v1/models/" + options.modelID:
            guard get else { throw methodNotAllowed(path) }
            return try json(modelEntry)
        case "/v1/chat/completions", "/v1/completions":
            guard post else { throw methodNotAllowed(path) }
            var request = request
            let body: ByteBuffer
            do { body = try await request.collectBody(upTo: options.maxBodyBytes) } catch {
                throw APIError(status: 413, message: "the request body is larger than \(ByteSize.format(options.maxBodyBytes))",
                               type: "invalid_request_error", param: nil, code: "request_too_large")
            }
            let data = Data(buffer: body)
            return try await path == "/v1/chat/completions" ? chat(data) : completion(data)
        default:
            if path.hasPrefix("/v1/models/") {
                throw APIError(status: 404, message: "the model '\(path.dropFirst("/v1/models/".count))' does not exist; this server has '\(options.modelID)'",
                               type: "invalid_request_error", param: "model", code: "model_not_found")
            }
            throw APIError(status: 404, message: "no such endpoint: \(request.method) \(path)", type: "invalid_request_error", param: nil, code: "not_found")
        }
    }

    var modelEntry: OpenAI.ModelEntry { OpenAI.ModelEntry(id: options.modelID, created: Int(started.timeIntervalSince1970)) }

    func methodNotAllowed(_ path: String) -> APIError {
        APIError(status: 405, message: "\(path) does not take this method", type: "invalid_request_error", param: nil, code: "method_not_allowed")
    }

    /// `Authorization: Bearer KEY`, compared without an early exit so the time does not say how
    /// much of a guess was right.
    func authorize(_ request: Request) throws {
        guard let key = options.apiKey else { return }
        let given = request.headers[.authorization].map { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : $0 } ?? ""
        let a = Array(given.utf8), b = Array(key.utf8)
        var diff = UInt8(a.count == b.count ? 0 : 1)
        for i in 0..<b.count { diff |= (i < a.count ? a[i] : 0) ^ b[i] }
        guard diff == 0 else {
            throw APIError(status: 401, message: "invalid or missing API key (Authorization: Bearer …)", type: "invalid_request_error",
                           param: nil, code: "invalid_api_key")
        }
    }

    // MARK: - Generation

    func decode<T: Decodable>(_ type: T.Type, _ data: Data) throws -> T {
        do { return try JSONDecoder().decode(type, from: data) } catch { throw APIError.decoding(error) }
    }

    func chat(_ data: Data) async throws -> Response {
        let sampling = try decode(OpenAI.Sampling.self, data)
        let request = try decode(OpenAI.ChatRequest.self, data)
        guard let template = engine.chatTemplate else {
            throw APIError.invalid("this model has no chat template the server understands; use /v1/completions", param: "messages")
        }
        guard !request.messages.isEmpty else { throw APIError.invalid("messages is empty", param: "messages") }
        var messages: [ChatMessage] = []
        for (i, m) in request.messages.enumerated() {
            let role = m.role == "developer" ? "system" : m.role
            guard ["system", "user", "assistant"].contains(role) else {
                throw APIError.invalid("messages[\(i)].role: '\(m.role)' is not supported (system, user, assistant)", param: "messages[\(i)].role")
            }
            messages.append(ChatMessage(role: role, content: m.content))
        }
        let text: String
        do { text = try template.render(messages: messages, addGenerationPrompt: true) } catch {
            throw APIError.invalid(error.description, param: "messages")
        }
        return try await generate(engine.tokenizer.encode(text), sampling, chat: true)
    }

    func completion(_ data: Data) async throws -> Response {
        let sampling = try decode(OpenAI.Sampling.self, data)
        let request = try decode(OpenAI.CompletionRequest.self, data)
        if request.echo == true { throw APIError.invalid("echo is not supported", param: "echo") }
        return try await generate(engine.tokenizer.encode(request.prompt.text), sampling, chat: false)
    }

    /// Checks the sampling fields, queues the sequence, and answers as one JSON object or as
    /// server-sent events.
    func generate(_ tokens: [Int32], _ s: OpenAI.Sampling, chat: Bool) async throws -> Response {
        if let m = s.model, m != options.modelID {
            throw APIError(status: 404, message: "the model '\(m)' does not exist; this server has '\(options.modelID)'",
                           type: "invalid_request_error", param: "model", code: "model_not_found")
        }
        if let n = s.n, n != 1 { throw APIError.invalid("n: only 1 choice per request is supported", param: "n") }
        let context = engine.contextLength
        guard tokens.count > (engine.tokenizer.addsBOS ? 1 : 0) else { throw APIError.invalid("the prompt is empty", param: chat ? "messages" : "prompt") }
        guard tokens.count < context else {
            throw APIError.invalid("the prompt is \(tokens.count) tokens but the context holds \(context)", param: chat ? "messages" : "prompt",
                                   code: "context_length_exceeded")
        }
        let limit = s.max_completion_tokens ?? s.max_tokens
        if let limit, !(1...context).contains(limit) {
            throw APIError.invalid("max_tokens must be between 1 and the context, \(context)", param: "max_tokens")
        }
        if let t = s.temperature, !(t.isFinite && (0...2).contains(t)) { throw APIError.invalid("temperature must be between 0 and 2", param: "temperature") }
        if let p = s.top_p, !(p.isFinite && (0...1).contains(p)) { throw APIError.invalid("top_p must be between 0 and 1", param: "top_p") }
        if let p = s.min_p, !(p.isFinite && (0...1).contains(p)) { throw APIError.invalid("min_p must be between 0 and 1", param: "min_p") }
        if let k = s.top_k, k < 0 { throw APIError.invalid("top_k must be 0 or more", param: "top_k") }
        if let r = s.repeat_penalty, !(r.isFinite && r > 0) { throw APIError.invalid("repeat_penalty must be more than 0", param: "repeat_penalty") }
        let stops = s.stop?.strings ?? []
        guard stops.count <= 4 else { throw APIError.invalid("stop: at most 4 strings", param: "stop") }

        var params = GenerateParameters(maxTokens: limit ?? context - tokens.count)
        var sp = SamplingParameters()
        if let t = s.temperature { sp.temperature = Float(t) }
        if let p = s.top_p { sp.topP = Float(p) }
        if let k = s.top_k { sp.topK = k }
        if let p = s.min_p { sp.minP = Float(p) }
        if let r = s.repeat_penalty { sp.repetitionPenalty = Float(r) }
        sp.seed = s.seed.map { UInt64(bitPattern: $0) } ?? UInt64.random(in: 0...UInt64(UInt32.max))
        params.sampling = sp

        let events: AsyncStream<Scheduler.Event>
        do { events = try scheduler.submit(tokens: tokens, parameters: params) } catch {
            throw APIError(status: 503, message: "the server is busy: \(scheduler.parallel) sequences are running and the queue is full; retry later",
                           type: "server_error", param: nil, code: "server_busy")
        }
        let id = (chat ? "chatcmpl-" : "cmpl-") + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        let created = Int(Date().timeIntervalSince1970)
        let model = options.modelID
        let promptCount = tokens.count
        if s.stream == true {
            let usage = s.stream_options?.include_usage == true
            var headers = HTTPFields()
            headers[.contentType] = "text/event-stream"
            headers[.cacheControl] = "no-cache"
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                func send<T: Encodable>(_ value: T) async throws {
                    let data = try JSONEncoder.api.encode(value)
                    try await writer.write(ByteBuffer(string: "data: " + String(decoding: data, as: UTF8.self) + "\n\n"))
                }
                func chunk(_ text: String?, role: String? = nil, finish: String? = nil) async throws {
                    if chat {
                        try await send(OpenAI.ChatChunk(id: id, created: created, model: model, choices: [
                            OpenAI.ChunkChoice(index: 0, delta: OpenAI.Delta(role: role, content: text), finish_reason: finish)], usage: nil))
                    } else {
                        try await send(OpenAI.TextCompletion(id: id, created: created, model: model, choices: [
                            OpenAI.TextChoice(text: text ?? "", index: 0, finish_reason: finish)], usage: nil))
                    }
                }
                if chat { try await chunk("", role: "assistant") }
                var outcome = Outcome(stops: stops)
                // Each token is written as it comes; a write to a client that went away throws,
                // which drops `events` and so frees the sequence (Scheduler.submit).
                for await event in events {
                    if let piece = try outcome.take(event), !piece.isEmpty { try await chunk(piece) }
                    if outcome.done { break }
                }
                let rest = outcome.finishText()
                if !rest.isEmpty { try await chunk(rest) }
                try await chunk(nil, finish: outcome.finishReason)
                if usage {
                    let u = OpenAI.Usage(prompt: promptCount, completion: outcome.generated)
                    if chat {
                        try await send(OpenAI.ChatChunk(id: id, created: created, model: model, choices: [], usage: u))
                    } else {
                        try await send(OpenAI.TextCompletion(id: id, created: created, model: model, choices: [], usage: u))
                    }
                }
                try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                try await writer.finish(nil)
            })
        }
        var outcome = Outcome(stops: stops)
        var text = ""
        for await event in events {
            if let piece = try outcome.take(event) { text += piece }
            if outcome.done { break }
        }
        text += outcome.finishText()
        let usage = OpenAI.Usage(prompt: promptCount, completion: outcome.generated)
        if chat {
            return try json(OpenAI.ChatCompletion(id: id, created: created, model: model, choices: [
                OpenAI.ChatChoice(index: 0, message: OpenAI.ChatMessageOut(role: "assistant", content: text), finish_reason: outcome.finishReason)],
                usage: usage))
        }
        return try json(OpenAI.TextCompletion(id: id, created: created, model: model, choices: [
            OpenAI.TextChoice(text: text, index: 0, finish_reason: outcome.finishReason)], usage: usage))
    }

    /// One request's text as events arrive: stop strings applied, tokens counted, the finish reason.
    struct Outcome {
        var filter: StopStrings
        var generated = 0
        var stats: GenerationStats?
        var heldBack = ""
        var done = false
        init(stops: [String]) { filter = StopStrings(stops) }

        /// Text to send for `event` (nil: none). Throws a failed generation as a 500.
        mutating func take(_ event: Scheduler.Event) throws -> String? {
            switch event {
            case .token(let t):
                guard filter.matched == nil else { return nil }
                generated += 1
                let piece = filter.feed(t.text)
                if filter.matched != nil { done = true }
                return piece
            case .finished(let s, let held):
                stats = s
                heldBack = held
                done = true
                return nil
            case .failed(let e):
                throw APIError(status: 500, message: e.description, type: "server_error", param: nil, code: "generation_failed")
            }
        }

        mutating func finishText() -> String { filter.matched == nil ? filter.feed(heldBack) + filter.flush() : "" }

        var finishReason: String {
            OpenAI.finishReason(stats?.stopReason ?? .cancelled, stopString: filter.matched != nil)
        }
    }

    // MARK: - Responses

    func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        json(String(decoding: try JSONEncoder.api.encode(value), as: UTF8.self), status: status)
    }

    func json(_ text: String, status: HTTPResponse.Status = .ok) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    func errorResponse(_ e: APIError) -> Response {
        json(e.json, status: HTTPResponse.Status(code: e.status))
    }
}
