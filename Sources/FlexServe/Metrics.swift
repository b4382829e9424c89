import FlexEngine
import FlexSystem

extension Server {
    /// Prometheus' text format: the scheduler's counters, the memory plan, the process's memory
    /// and HTTP responses by status. Names follow Prometheus' conventions (`_total` counters,
    /// base units).
    func metricsText() -> String {
        let m = scheduler.metrics
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ value: some Numeric & CustomStringConvertible, labels: String = "") {
            out += "# HELP flexrun_\(name) \(help)\n# TYPE flexrun_\(name) \(type)\nflexrun_\(name)\(labels) \(value)\n"
        }
        metric("requests_total", "counter", "Generation requests accepted.", m.requests)
        metric("generated_tokens_total", "counter", "Tokens generated.", m.generatedTokens)
        metric("prompt_tokens_total", "counter", "Prompt tokens processed by finished sequences.", m.promptTokens)
        metric("passes_total", "counter", "Forward passes run (each serves every running sequence).", m.passes)
        metric("busy_seconds_total", "counter", "Time spent in forward passes.", m.busySeconds)
        metric("failures_total", "counter", "Passes that failed (a weight read error).", m.failures)
        metric("tokens_per_second", "gauge", "Tokens generated per second over the last 10 seconds.", m.tokensPerSecond())
        metric("sequences_running", "gauge", "Sequences in the running batch.", m.running)
        metric("requests_queued", "gauge", "Requests waiting for a free sequence slot.", m.queued)
        metric("sequences_max", "gauge", "Sequences batched at most (--parallel).", scheduler.parallel)
        metric("kv_pages_in_use", "gauge", "KV cache pages held by running sequences.", m.kvPagesInUse)
        metric("kv_page_bytes", "gauge", "Bytes of one KV cache page.", m.kvPageBytes)
        metric("blocks_skipped", "gauge", "Transformer blocks the pass skips (pruning).", m.blocksSkipped)
        metric("memory_limit_bytes", "gauge", "The memory cap in force (0: none).", engine.memoryLimit ?? 0)
        if let p = engine.plan {
            metric("memory_planned_bytes", "gauge", "Memory the plan under the cap uses.", p.totalBytes)
            metric("weights_resident_bytes", "gauge", "Weight bytes held in memory under the cap.", p.residentBytes)
            metric("weights_streamed_bytes_per_pass", "gauge", "Weight bytes read from disk per pass.", p.streamedBytesPerToken)
        }
        metric("resident_bytes", "gauge", "The process's resident set.", Platform.residentBytes() ?? 0)
        let statuses = self.statuses.withLock { $0 }
        out += "# HELP flexrun_http_responses_total HTTP responses by status.\n# TYPE flexrun_http_responses_total counter\n"
        for (code, n) in statuses.sorted(by: { $0.key < $1.key }) { out += "flexrun_http_responses_total{code=\"\(code)\"} \(n)\n" }
        return out
    }
}
