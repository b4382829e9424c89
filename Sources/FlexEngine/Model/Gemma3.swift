extension ArchitectureSpec {
    /// Gemma 3: NeoX rope, QK-norm and post-norms (optional tensors the file carries), GeGLU with
    /// tanh GELU, embeddings scaled by √n_embd, a tied head, and five sliding-window layers per
    /// global one. The local layers' rope base is 10,000 where the global one is the file's
    /// `rope.freq_base` (1e6): the defaults llama.cpp applies when the file does not say
    /// (`gemma3.rope.freq_base_swa`, `gemma3.attention.sliding_window_pattern`).
    ///
    /// The norm weights in Gemma GGUFs already include the +1 of Gemma's `(1 + w)` RMSNorm (the
    /// converter adds it), so every norm here is the plain RMSNorm of the other architectures.
    public static let gemma3 = ArchitectureSpec(name: "gemma3", ropeStyle: .neox, allowsAttentionBias: false,
                                                defaultPreTokenizer: "default", ffnActivation: .geluTanh,
                                                scalesEmbedding: true, defaultWindowPattern: 6, defaultLocalRopeBase: 10_000)
}
