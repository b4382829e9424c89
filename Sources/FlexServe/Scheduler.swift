import FlexEngine
import FlexSystem
import Foundation
import Synchronization

/// Continuous batching for the server: one thread owns the engine's session and steps it; requests
/// join the running batch at the next token boundary and leave it the moment they end or their
/// client goes away.
///
/// Why one session and one thread: under a cap a pass costs one stream of the weights whatever
/// number of rows it carries, so every running request shares each pass (docs/ARCHITECTURE.md,
/// "Under a cap the streamer belongs to one session"). The session is stepped by this thread
/// only; the HTTP handlers talk to it through the inbox (a mutex and a condition).
///
/// `@unchecked Sendable`: the session is touched only by the stepping thread, and everything the
/// handlers touch is behind `inbox`'s lock.
public final class Scheduler: @unchecked Sendable {
    /// What a request receives, in order: tokens, then one end.
    public enum Event: Sendable {
        case token(GeneratedToken)
        /// The sequence ended; `heldBack` is text an incomplete character held back ("" usually).
        case finished(GenerationStats, heldBack: String)
        case failed(EngineError)
    }

    /// A request refused before it runs.
    public enum Refusal: Error, Equatable {
        /// Every slot is busy and the queue is full.
        case queueFull(Int)
        case stopped
    }

    public let engine: Engine
    /// Sequences decoded together at most.
    public let parallel: Int
    /// Requests that may wait for a slot; more are refused (HTTP 503).
    public let queueLimit: Int

    struct Pending {
        let ticket: Int
        let tokens: [Int32]
        let parameters: GenerateParameters
        let sink: AsyncStream<Event>.Continuation
    }

    struct Inbox {
        var waiting: [Pending] = []
        var cancelled: Set<Int> = []
        var stopping = false
        var nextTicket = 0
    }

    private let inbox = Mutex(Inbox())
    private let wake = NSCondition()
    private let counters = Mutex(SchedulerMetrics())
    private var thread: Thread?

    public init(engine: Engine, parallel: Int, queueLimit: Int) {
        self.engine = engine
        self.parallel = max(1, min(parallel, engine.session.maxSequences))
        self.queueLimit = queueLimit
        let thread = Thread { [unowned self] in self.loop() }
        thread.stackSize = 1 << 22
        thread.name = "flexrun-scheduler"
        self.thread = thread
        thread.start()
    }

    /// Queues a generation. The stream ends after `.finished` or `.failed`; dropping it (the
    /// client went away) ends the sequence at the next token boundary and frees its KV pages.
    public func submit(tokens: [Int32], parameters: GenerateParameters) throws(Refusal) -> AsyncStream<Event> {
        let (stream, sink) = AsyncStream<Event>.makeStream(bufferingPolicy: .unbounded)
        let ticket: Int = try {
            () throws(Refusal) -> Int in
            try inbox.withLock { box throws(Refusal) -> Int in
                if box.stopping { throw .stopped }
                guard box.waiting.count < queueLimit + max(0, parallel - activeCount) else { throw .queueFull(queueLimit) }
                let t = box.nextTicket
                box.nextTicket += 1
                box.waiting.append(Pending(ticket: t, tokens: tokens, parameters: parameters, sink: sink))
                return t
            }
        }()
        sink.onTermination = { [weak self] reason in
            guard let self, case .cancelled = reason else { return }
            self.inbox.withLock { _ = $0.cancelled.insert(ticket) }
            self.signal()
        }
        counters.withLock { $0.requests += 1 }
        signal()
        return stream
    }

    /// Sequences running now (read without the stepping thread's cooperation: a snapshot).
    public var activeCount: Int { counters.withLock { $0.running } }

    public var metrics: SchedulerMetrics {
        var m = counters.withLock { $0 }
        m.queued = inbox.withLock { $0.waiting.count }
        return m
    }

    /// Ends the loop after the running sequences are cancelled; waiting requests get `.failed`.
    public func stop() {
        inbox.withLock { $0.stopping = true }
        signal()
    }

    private func signal() {
        wake.lock()
        wake.signal()
        wake.unlock()
    }

    // MARK: - The stepping thread

    private var running: [SequenceID: (ticket: Int, sink: AsyncStream<Event>.Continuation)] = [:]
    private var byTicket: [Int: SequenceID] = [:]

    private func loop() {
        let session = engine.session
        while true {
            // Take in what the handlers left: cancellations first, then new requests while slots are free.
            let (admitted, cancelled, stopping) = inbox.withLock { box -> ([Pending], Set<Int>, Bool) in
                let cancelled = box.cancelled
                box.cancelled.removeAll()
                box.waiting.removeAll { cancelled.contains($0.ticket) }
                let free = box.stopping ? 0 : max(0, parallel - running.count)
                let take = Array(box.waiting.prefix(free))
                box.waiting.removeFirst(take.count)
                return (take, cancelled, box.stopping)
            }
            for t in cancelled { if let id = byTicket[t] { session.cancel(id) } }
            if stopping {
                for (id, _) in running { session.cancel(id) }
                let left = inbox.withLock { box -> [Pending] in defer { box.waiting.removeAll() }; return box.waiting }
                for p in left { p.sink.yield(.failed(.invalidOption("the server is shutting down"))); p.sink.finish() }
            }
            for p in admitted {
                do {
                    let id = try session.add(tokens: p.tokens, parameters: p.parameters)
                    running[id] = (p.ticket, p.sink)
                    byTicket[p.ticket] = id
                } catch {
                    p.sink.yield(.failed(error))
                    p.sink.finish()
                }
            }
            let pages = session.kvCache.pagesInUse
            counters.withLock {
                $0.running = running.count
                $0.kvPagesInUse = pages
            }
            if session.isIdle {
                if stopping { return }
                wake.lock()
                let idle = inbox.withLock { $0.waiting.isEmpty && $0.cancelled.isEmpty && !$0.stopping }
                if idle { _ = wake.wait(until: Date().addingTimeInterval(1)) }
                wake.unlock()
                continue
            }
            let t0 = Platform.now()
            var tokens = 0, promptTokens = 0, passTokens = 0
            /// Adds the tokens counted so far to the counters. Called before a reply ends, so a
            /// client that reads /metrics once it has its reply finds its tokens counted (they
            /// were added after the pass, and CI once read 47 of 48).
            func publishCounts() {
                let (t, p) = (tokens, promptTokens)
                tokens = 0
                promptTokens = 0
                counters.withLock { m in
                    m.generatedTokens += t
                    m.promptTokens += p
                }
            }
            do {
                try session.step { event in
                    switch event {
                    case .token(let id, let token):
                        tokens += 1
                        passTokens += 1
                        running[id]?.sink.yield(.token(token))
                    case .finished(let id, let stats):
                        promptTokens += stats.promptTokens
                        if let r = running.removeValue(forKey: id) {
                            publishCounts()
                            byTicket[r.ticket] = nil
                            r.sink.yield(.finished(stats, heldBack: session.flushText(id)))
                            r.sink.finish()
                        }
                    }
                }
            } catch {
                // Every sequence has ended with `.error` through the events above; say why.
                for (_, r) in running { r.sink.yield(.failed(error)); r.sink.finish() }
                running.removeAll()
                byTicket.removeAll()
                counters.withLock { $0.failures += 1 }
            }
            let seconds = Platform.now() - t0
            let kv = session.kvCache
            let skipped = session.mask.skipped.count
            publishCounts()
            counters.withLock { m in
                m.kvPagesInUse = kv.pagesInUse
                m.kvPageBytes = kv.pageBytes
                m.blocksSkipped = skipped
                m.passes += 1
                m.busySeconds += seconds
                m.running = running.count
                m.recordRate(tokens: passTokens, at: Platform.now())
            }
        }
    }
}

/// The scheduler's counters, for `/metrics`.
public struct SchedulerMetrics: Sendable {
    public var requests = 0
    public var running = 0
    public var queued = 0
    public var generatedTokens = 0
    public var promptTokens = 0
    public var passes = 0
    public var failures = 0
    public var busySeconds: Double = 0
    /// The session's KV pages and mask, published by the stepping thread after each pass.
    public var kvPagesInUse = 0
    public var kvPageBytes = 0
    public var blocksSkipped = 0
    /// Tokens generated over the last few seconds (a ring of one-second buckets).
    var buckets = [(second: Int, tokens: Int)](repeating: (0, 0), count: 10)

    mutating func recordRate(tokens: Int, at now: Double) {
        let s = Int(now)
        let i = s % buckets.count
        if buckets[i].second != s { buckets[i] = (s, 0) }
        buckets[i].tokens += tokens
    }

    /// Generated tokens per second over the last 10 seconds.
    public func tokensPerSecond(now: Double = Platform.now()) -> Double {
        let s = Int(now)
        let recent = buckets.filter { $0.second > s - buckets.count && $0.second <= s }
        return Double(recent.reduce(0) { $0 + $1.tokens }) / Double(buckets.count)
    }
}
