import CFlexShims
import Glibc

/// Files that must not outlive a process killed by SIGINT or SIGTERM: ``OutputFile``'s
/// temporary files register here, and a command that writes one (`flexrun pack`,
/// `prune analyze`) calls ``install()`` first.
///
/// `deinit` does not run when a signal ends the process, so without this an interrupted
/// `flexrun pack` left its `OUT.partial-PID` behind (tens of MB). The handler is C
/// (`cflex_cleanup_*`): it may only make async-signal-safe calls, which Swift cannot promise.
/// It unlinks the registered paths and then lets the signal kill the process as before, so the
/// exit status still says which signal it was (130 for Ctrl-C in a shell). Installing is left
/// to executables: a library replacing its host's handlers would be a surprise.
public enum SignalCleanup {
    /// Installs the handler for SIGINT and SIGTERM (again is harmless).
    public static func install() {
        for s in [SIGINT, SIGTERM] { _ = cflex_cleanup_install(s) }
    }

    /// Adds `path` to the paths the handler removes; nil when the table (16 paths) is full.
    static func register(_ path: String) -> Int32? {
        let slot = cflex_cleanup_register(path)
        return slot >= 0 ? slot : nil
    }

    /// Takes a path registered as `slot` out of the table.
    static func unregister(_ slot: Int32?) {
        if let slot { cflex_cleanup_unregister(slot) }
    }
}
