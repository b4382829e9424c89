import Foundation

/// Jobs for ring slots, done by a few threads beside the forward pass: the machinery the pread
/// reader and the block decoders share. The forward thread queues a slot's jobs, then waits for
/// that slot; the first failure is kept and thrown by every later wait.
///
/// Each thread gets its own job runner from `makeRunner`, so per-thread state (a zstd context,
/// scratch) lives in the runner's closure and is reused for every job that thread takes.
final class SlotWorkQueue<Job>: @unchecked Sendable {
    // @unchecked Sendable: every mutable field is guarded by `mutex`.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var queue: [(job: Job, slot: Int)] = []
    private var head = 0
    private var pending: [Int]
    private var failure: String?
    private var stopping = false
    private let finished = DispatchGroup()

    /// `makeRunner` is called once on each thread; its result does a job and returns an error
    /// line, or nil.
    init(slots: Int, jobsPerSlot: Int, threads: Int, makeRunner: @escaping @Sendable () -> (Job) -> String?) {
        pending = [Int](repeating: 0, count: slots)
        queue.reserveCapacity(slots * jobsPerSlot + 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
        for _ in 0..<threads {
            finished.enter()
            let t = Thread { [self] in work(makeRunner()); finished.leave() }
            t.stackSize = 1 << 18
            t.start()
        }
    }

    private func work(_ run: (Job) -> String?) {
        pthread_mutex_lock(mutex)
        while true {
            while head == queue.count && !stopping { pthread_cond_wait(cond, mutex) }
            if head == queue.count && stopping { break }
            let (job, slot) = queue[head]
            head += 1
            if head == queue.count { queue.removeAll(keepingCapacity: true); head = 0 }
            pthread_mutex_unlock(mutex)
            let error = run(job)
            pthread_mutex_lock(mutex)
            if let error { failure = failure ?? error }
            pending[slot] -= 1
            pthread_cond_broadcast(cond)
        }
        pthread_mutex_unlock(mutex)
    }

    /// Queues `jobs` for `slot` (no allocation once the queue has grown to its reserve).
    func start<S: Sequence>(_ jobs: S, slot: Int) where S.Element == Job {
        pthread_mutex_lock(mutex)
        var n = 0
        for j in jobs { queue.append((j, slot)); n += 1 }
        pending[slot] += n
        if n > 0 { pthread_cond_broadcast(cond) }
        pthread_mutex_unlock(mutex)
    }

    /// Blocks until every job of `slot` is done.
    func wait(slot: Int) throws(EngineError) {
        pthread_mutex_lock(mutex)
        while pending[slot] > 0 { pthread_cond_wait(cond, mutex) }
        let f = failure
        pthread_mutex_unlock(mutex)
        if let f { throw .weightRead(f) }
    }

    /// Waits for every job, then stops the threads.
    func drain() {
        pthread_mutex_lock(mutex)
        while pending.contains(where: { $0 > 0 }) { pthread_cond_wait(cond, mutex) }
        stopping = true
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
        finished.wait()
    }

    deinit {
        drain()
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        cond.deallocate()
    }
}
