extension ArchitectureSpec {
    /// Llama 2/3, Mistral, SmolLM2: RMSNorm, SwiGLU FFN, GQA, interleaved rope (GGUF conversion
    /// permutes Q/K so the pairs are adjacent), optional separate output head, optional
    /// `rope_freqs.weight` factors (Llama 3.1 scaling).
    public static let llama = ArchitectureSpec(name: "llama", ropeStyle: .interleaved, allowsAttentionBias: true,
                                               defaultPreTokenizer: "default")
}
