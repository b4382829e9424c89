import Foundation

/// Where FlexRun keeps models: `$FLEXRUN_MODELS`, else `$XDG_CACHE_HOME/flexrun/models`, else
/// `~/.cache/flexrun/models`. `Tools/fetch-model.sh` installs the default model there (it spells
/// the same rule in shell); the CLI, tests and benchmarks find it through this one place.
public enum ModelCache {
    /// File name of the default model, SmolLM2-135M-Instruct Q4_1.
    public static let defaultModelName = "SmolLM2-135M-Instruct.Q4_1.gguf"

    /// File name of Gemma 3 270M (`Tools/fetch-model.sh gemma3`), the second real model.
    public static let gemma3ModelName = "gemma-3-270m-q4_k_m.gguf"

    public static var directory: String {
        let env = ProcessInfo.processInfo.environment
        return env["FLEXRUN_MODELS"] ?? ((env["XDG_CACHE_HOME"] ?? (NSHomeDirectory() + "/.cache")) + "/flexrun/models")
    }

    public static var defaultModelPath: String { directory + "/" + defaultModelName }
    public static var gemma3ModelPath: String { directory + "/" + gemma3ModelName }
}
