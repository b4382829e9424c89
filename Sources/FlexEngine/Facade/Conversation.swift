/// A multi-turn chat on an engine: the turns so far, rendered by the model's chat template for
/// each new turn, and the KV cache kept between turns so that a turn prefills only its own tokens.
///
/// Why re-render rather than append: templates decide what goes between turns (Gemma folds the
/// system message into the first user turn, some templates print a default system turn), so the
/// only text that is certain to be right is the whole conversation rendered anew. The session then
/// compares the new prompt's tokens with what the kept cache holds and runs only what differs
/// (``Session/add(tokens:parameters:continuing:)``): on an ordinary turn, the closing of the last
/// reply and the new user turn.
///
/// When a turn would not fit in the context, the oldest user–assistant pairs after the system
/// message are dropped until it does (``Turn/droppedTurns`` says how many); the cache is then cut
/// back to where the prompts part and rebuilt from there.
///
/// Use from one thread: it drives the engine's session.
public final class Conversation {
    public let engine: Engine
    /// The system message (nil: the template's own default, if it has one).
    public let system: String?
    /// Every turn so far, without the system message.
    public private(set) var messages: [ChatMessage] = []
    /// Parameters of each reply; ``GenerateParameters/keepCache`` is always set.
    public var parameters: GenerateParameters
    private let template: ChatTemplate
    /// The sequence whose kept cache the next turn continues.
    private var cached: SequenceID?

    public init(engine: Engine, system: String? = nil, parameters: GenerateParameters = GenerateParameters()) throws(EngineError) {
        guard let template = engine.chatTemplate else { throw .noChatTemplate }
        self.engine = engine
        self.system = system
        self.template = template
        self.parameters = parameters
    }

    /// A reply being generated: iterate ``tokens``, then hand it back to ``Conversation/finish(_:text:)``.
    public struct Turn {
        public var tokens: TokenIterator
        /// Old user–assistant pairs dropped to fit this turn into the context.
        public let droppedTurns: Int
        /// Prompt tokens of this turn (the whole rendered conversation).
        public let promptTokens: Int
    }

    /// Starts the assistant's reply to `user`. Throws when even this turn alone (with the system
    /// message) leaves no room in the context for a reply.
    public func send(_ user: String) throws(EngineError) -> Turn {
        var params = parameters
        params.keepCache = true
        params.chat = false
        var turns = messages + [ChatMessage(role: "user", content: user)]
        // Room for the reply: the token limit, but at most a quarter of the context, so that a
        // conversation with no limit (-n -1) still keeps some of its history.
        let context = engine.contextLength
        let room = max(1, min(params.maxTokens, context / 4))
        var dropped = 0
        var tokens = try encode(turns)
        while tokens.count + room > context, turns.count > 1 {
            // The oldest pair (a user turn and the reply to it) goes.
            turns.removeFirst(turns.count >= 3 ? 2 : 1)
            dropped += 1
            tokens = try encode(turns)
        }
        guard tokens.count < context else { throw .promptTooLong(tokens: tokens.count, context: context) }
        messages = turns
        if let c = cached, !engine.session.keptCaches.contains(c) { cached = nil }
        let iterator = try engine.generate(tokens: tokens, parameters: params, continuing: cached)
        cached = nil
        return Turn(tokens: iterator, droppedTurns: dropped, promptTokens: tokens.count)
    }

    /// Records the reply that `turn` produced (all of it, or what came before a cancel or a stop
    /// string: pass `text` then) and keeps its cache for the next turn.
    public func finish(_ turn: Turn, text: String? = nil) {
        let reply = text ?? engine.tokenizer.decode(turn.tokens.tokens)
        messages.append(ChatMessage(role: "assistant", content: reply))
        if let id = turn.tokens.sequence, engine.session.keptCaches.contains(id) { cached = id }
    }

    /// Forgets every turn and frees the kept cache (`/reset`).
    public func reset() {
        messages.removeAll()
        if let c = cached { engine.session.release(c) }
        cached = nil
    }

    private func encode(_ turns: [ChatMessage]) throws(EngineError) -> [Int32] {
        let all = (system.map { [ChatMessage(role: "system", content: $0)] } ?? []) + turns
        return engine.tokenizer.encode(try template.render(messages: all, addGenerationPrompt: true))
    }
}
