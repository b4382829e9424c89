import Glibc
import Synchronization
import CFlexShims

/// A fixed pool of compute threads with a low-overhead fork/join `parallelFor`.
///
/// Compute must not run on the Swift cooperative pool (it would starve async work and cannot
/// be pinned or sized), so FlexRun owns its threads. The calling thread is worker 0 and does
/// its share; the others spin briefly after a job (the next matmul follows within microseconds
/// during decode) and then park on a condition variable, so an idle engine burns no CPU.
/// Tasks are handed out by an atomic counter, so a slow core simply takes fewer of them.
///
/// The threads run a ``WorkerCrew`` that holds the shared state, never the pool itself, so
/// releasing the pool stops and joins them: an app that opens and closes sessions keeps no
/// threads behind (a worker once held its pool strongly for its whole loop, and every session
/// leaked its compute threads).
public final class WorkerPool: Sendable {
    public var threadCount: Int { crew.threadCount }
    /// Internal for the test that checks the threads end with the pool.
    let crew: WorkerCrew

    /// A task function for the allocation-free entry point: (context, task, thread).
    public typealias TaskFunction = @convention(c) (UnsafeRawPointer, Int, Int) -> Void

    /// Iterations a worker spins waiting for the next job before parking (~50 µs).
    static let spinLimit = 20_000
    /// Spinning threads yield the core this often (~40 µs of spinning). Why: when the machine has
    /// more runnable threads than cores (an app's other work, a build beside it), a spinning
    /// submitter or worker held the core that the thread it waited for needed, for a whole time
    /// slice; a Gemma decode beside a 2-core build spent two thirds of its time in these loops
    /// (perf). Every 1,024 spins cost 5-10 % of an uncontended decode in syscalls; this often, a
    /// fork/join that is merely slow never yields.
    static let yieldEvery = 16_384

    public init(threads: Int) {
        crew = WorkerCrew(threads: threads)
    }

    /// Runs `body(task, thread)` for every task in `0..<tasks`, spread over all threads; returns
    /// when all are done. Convenient, but allocates the closure context: hot paths use
    /// ``parallelFor(_:context:_:)``. `thread` is in `0..<threadCount` and indexes per-thread scratch.
    /// Not reentrant: call it from one thread at a time.
    public func parallelFor(_ tasks: Int, _ body: (Int, Int) -> Void) { crew.parallelFor(tasks, body) }

    /// Runs `function(context, task, thread)` for every task in `0..<tasks`: the hot-path form.
    /// A Swift closure handed to a stored property gets a heap-allocated context on every call
    /// (measured: one malloc per matmul, 152 per decoded token); a C function pointer and a
    /// pointer to a context struct on the caller's stack allocate nothing.
    public func parallelFor(_ tasks: Int, context: UnsafeRawPointer, _ function: TaskFunction) {
        crew.parallelFor(tasks, context: context, function)
    }

    deinit { crew.stop() }
}

/// The state a ``WorkerPool``'s threads share, and their loop. Each thread holds the crew (not
/// the pool) until ``stop()`` ends it.
final class WorkerCrew: @unchecked Sendable {
    // @unchecked Sendable: the job fields are written only by the submitting thread before the
    // generation counter is released, and read by workers only after acquiring it.
    let threadCount: Int
    typealias TaskFunction = WorkerPool.TaskFunction

    private var job: ((Int, Int) -> Void)?
    private var task: TaskFunction?
    private var taskContext: UnsafeRawPointer?
    private var taskCount = 0
    private let nextTask = Atomic<Int>(0)
    private let busyWorkers = Atomic<Int>(0)
    private let generation = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let parkLock: UnsafeMutablePointer<pthread_mutex_t>
    private let parkCond: UnsafeMutablePointer<pthread_cond_t>
    private var threads: [pthread_t] = []

    init(threads: Int) {
        precondition(threads >= 1)
        threadCount = threads
        parkLock = .allocate(capacity: 1)
        parkCond = .allocate(capacity: 1)
        pthread_mutex_init(parkLock, nil)
        pthread_cond_init(parkCond, nil)
        for index in 1..<threads {
            let context = Unmanaged.passRetained(WorkerContext(crew: self, index: index)).toOpaque()
            var tid = pthread_t()
            let rc = pthread_create(&tid, nil, { raw in
                let ctx = Unmanaged<WorkerContext>.fromOpaque(raw!).takeRetainedValue()
                ctx.crew.workerLoop(index: ctx.index)
                return nil
            }, context)
            precondition(rc == 0, "pthread_create failed: \(rc)")
            self.threads.append(tid)
        }
    }

    private final class WorkerContext {
        let crew: WorkerCrew
        let index: Int
        init(crew: WorkerCrew, index: Int) { self.crew = crew; self.index = index }
    }

    func parallelFor(_ tasks: Int, _ body: (Int, Int) -> Void) {
        if tasks <= 0 { return }
        if threadCount == 1 || tasks == 1 {
            for t in 0..<tasks { body(t, 0) }
            return
        }
        withoutActuallyEscaping(body) { escapable in
            job = escapable
            start(tasks)
            job = nil
        }
    }

    func parallelFor(_ tasks: Int, context: UnsafeRawPointer, _ function: TaskFunction) {
        if tasks <= 0 { return }
        if threadCount == 1 || tasks == 1 {
            for t in 0..<tasks { function(context, t, 0) }
            return
        }
        task = function
        taskContext = context
        start(tasks)
        task = nil
        taskContext = nil
    }

    private func start(_ tasks: Int) {
        taskCount = tasks
        nextTask.store(0, ordering: .relaxed)
        busyWorkers.store(threadCount - 1, ordering: .relaxed)
        pthread_mutex_lock(parkLock)
        generation.add(1, ordering: .releasing)
        pthread_cond_broadcast(parkCond)
        pthread_mutex_unlock(parkLock)
        runTasks(thread: 0)
        var spins = 0
        while busyWorkers.load(ordering: .acquiring) > 0 {
            spins += 1
            spinPause(spins)
        }
    }

    @inline(__always)
    private func runTasks(thread: Int) {
        if let task, let taskContext {
            while true {
                let t = nextTask.add(1, ordering: .relaxed).oldValue
                if t >= taskCount { break }
                task(taskContext, t, thread)
            }
            return
        }
        guard let job else { return }
        while true {
            let t = nextTask.add(1, ordering: .relaxed).oldValue
            if t >= taskCount { break }
            job(t, thread)
        }
    }

    private func workerLoop(index: Int) {
        var seen = 0
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen && !stopping.load(ordering: .relaxed) {
                spins += 1
                if spins < WorkerPool.spinLimit { spinPause(spins); continue }
                pthread_mutex_lock(parkLock)
                while generation.load(ordering: .acquiring) == seen && !stopping.load(ordering: .relaxed) {
                    pthread_cond_wait(parkCond, parkLock)
                }
                pthread_mutex_unlock(parkLock)
            }
            if stopping.load(ordering: .acquiring) { return }
            seen = generation.load(ordering: .acquiring)
            runTasks(thread: index)
            busyWorkers.subtract(1, ordering: .releasing)
        }
    }

    /// One wait of a spin loop on its `spins`-th turn: a PAUSE, or every ``yieldEvery`` turns the core.
    @inline(__always)
    private func spinPause(_ spins: Int) {
        if spins % WorkerPool.yieldEvery == 0 { sched_yield() } else { cflex_cpu_relax() }
    }

    /// Ends and joins the threads (the pool is gone: no job can be running).
    func stop() {
        stopping.store(true, ordering: .releasing)
        pthread_mutex_lock(parkLock)
        generation.add(1, ordering: .releasing)
        pthread_cond_broadcast(parkCond)
        pthread_mutex_unlock(parkLock)
        for t in threads { pthread_join(t, nil) }
        threads.removeAll()
    }

    deinit {
        pthread_mutex_destroy(parkLock)
        pthread_cond_destroy(parkCond)
        parkLock.deallocate()
        parkCond.deallocate()
    }
}

