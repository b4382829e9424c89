import Foundation

/// Where FlexRun keeps models: `$FLEXRUN_MODELS`, else `$XDG_CACHE_HOME/flexrun/models`, else
/// `~/.cache/flexrun/models`. `Tools/fetch-model.sh` installs the default model there (it spells
/// the same rule in shell); the CLI, tests and benchmarks find it through this one place.
public enum ModelCache {
    /// File name of the default model, SmolLM2-135M-Instruct Q4_1.
    public static let defaultModelName = "SmolLM2-135M-Instruct.Q4_1.gguf"

    public static var directory: String {
        let env = ProcessInfo.processInfo.environment
        return env["FLEXRUN_MODELS"] ?? ((env["XDG_CACHE_HOME"] ?? (NSHomeDirectory() + "/.cache")) + "/flexrun/models")
    }

    public static var defaultModelPath: String { directory + "/" + defaultModelName }
}
