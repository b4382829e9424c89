/// A candidate merge that knows which of two candidates the tokenizer takes first.
protocol MergeCandidate {
    func precedes(_ other: Self) -> Bool
}

/// The binary heap both tokenizers keep their candidate merges in (llama.cpp's `llm_bigram_*`
/// queues): the candidate that ``MergeCandidate/precedes(_:)`` all others pops first. With it a
/// word of n symbols costs O(n log n) lookups instead of a rescan of every pair per merge.
struct MergeQueue<Candidate: MergeCandidate> {
    private var heap: [Candidate] = []

    mutating func removeAll() { heap.removeAll(keepingCapacity: true) }

    mutating func push(_ c: Candidate) {
        heap.append(c)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i].precedes(heap[parent]) else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> Candidate? {
        guard let top = heap.first else { return nil }
        let last = heap.removeLast()
        if heap.isEmpty { return top }
        heap[0] = last
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var best = i
            if l < heap.count, heap[l].precedes(heap[best]) { best = l }
            if r < heap.count, heap[r].precedes(heap[best]) { best = r }
            if best == i { break }
            heap.swapAt(i, best)
            i = best
        }
        return top
    }
}
