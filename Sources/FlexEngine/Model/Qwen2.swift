extension ArchitectureSpec {
    /// Qwen2: the llama block with Q/K/V biases and NeoX (half-split) rope.
    public static let qwen2 = ArchitectureSpec(name: "qwen2", ropeStyle: .neox, allowsAttentionBias: true,
                                               defaultPreTokenizer: "qwen2")
}
