import FlexFormat
import FlexKernels

/// A requantization recipe: which ggml type each tensor of a model becomes (`--requant NAME`).
///
/// The K-quant mixes are llama.cpp's file types (`llama_ftype`): `q4_k_m` and `q5_k_m` follow
/// `llama_tensor_get_type` (llama-quant.cpp) for a dense llama-like model, so a model requantized
/// here has the tensor types `llama-quantize` would give it, and, because the quantizers are
/// ggml's reference ones, the same bytes. A uniform recipe (`q8_0`, `q4_k`, …) gives every
/// matrix one type, like `llama-quantize --pure`. Both fall back as llama.cpp does where a row
/// is not a whole number of the type's blocks (SmolLM2's width 576 is not a multiple of 256).
/// A pure value: tensor infos and the layer count in, a type per tensor out.
public struct QuantMix: Sendable, Equatable, CustomStringConvertible {
    public enum Recipe: Sendable, Equatable {
        /// Every matrix the same type.
        case uniform(GGMLType)
        /// llama.cpp's Q4_K_M: Q4_K, with Q6_K for the head and for attn_v and ffn_down in the
        /// layers `useMoreBits` picks.
        case q4_K_M
        /// llama.cpp's Q5_K_M: as Q4_K_M on a Q5_K base.
        case q5_K_M
    }

    public let recipe: Recipe

    public init(_ recipe: Recipe) { self.recipe = recipe }

    /// Every recipe `--requant` takes, by its name.
    public static let all: [QuantMix] = [.init(.q4_K_M), .init(.q5_K_M)] + Quantize.targets.map { .init(.uniform($0)) }

    /// The recipe called `name` (case-insensitive: `q4_k_m`, `Q6_K`, …).
    public init?(named name: String) {
        guard let m = Self.all.first(where: { $0.description.lowercased() == name.lowercased() }) else { return nil }
        self = m
    }

    public var description: String {
        switch recipe {
        case .uniform(let t): return t.description
        case .q4_K_M: return "Q4_K_M"
        case .q5_K_M: return "Q5_K_M"
        }
    }

    /// The type most matrices get.
    public var baseType: GGMLType {
        switch recipe {
        case .uniform(let t): return t
        case .q4_K_M: return .q4_K
        case .q5_K_M: return .q5_K
        }
    }

    /// llama.cpp's `llama_ftype`, written as `general.file_type` so llama.cpp reports the file as
    /// it would its own. A uniform K type is the `_S` file type `llama-quantize --pure` writes.
    public var fileType: UInt32 {
        switch recipe {
        case .q4_K_M: return 15
        case .q5_K_M: return 17
        case .uniform(let t):
            switch t {
            case .q4_0: return 2
            case .q4_1: return 3
            case .q8_0: return 7
            case .q5_0: return 8
            case .q5_1: return 9
            case .q4_K: return 14
            case .q5_K: return 16
            case .q6_K: return 18
            default: return 0
            }
        }
    }

    /// The new type of each of `tensors` (in their order), or nil where a tensor keeps its type
    /// and bytes: vectors, norms, and matrices whose rows are not even whole 32-element blocks.
    /// `layers` is the model's block count (llama.cpp's `n_layer`, which ffn_down's choice divides).
    public func types(for tensors: [TensorInfo], layers: Int) -> [GGMLType?] {
        var result = [GGMLType?](repeating: nil, count: tensors.count)
        // llama.cpp's attn_v and ffn_down counters advance in its visiting order.
        let order = Self.llamaCppOrder(tensors)
        let nAttentionV = tensors.filter { Self.isAttentionV($0.name) }.count
        let tiedHead = !tensors.contains { $0.name == "output.weight" }
        var iAttentionV = 0, iFFNDown = 0
        for i in order {
            let t = tensors[i]
            guard Self.isQuantizable(t) else { continue }
            var type = baseType
            if case .uniform = recipe {} else {
                if t.name == "output.weight" || (tiedHead && t.name == "token_embd.weight") {
                    type = t.rowLength % baseType.blockElements != 0 ? .q8_0 : .q6_K
                } else if Self.isAttentionV(t.name) {
                    if Self.useMoreBits(iAttentionV, nAttentionV) { type = .q6_K }
                    iAttentionV += 1
                } else if t.name.contains("ffn_down") {
                    if Self.useMoreBits(iFFNDown, layers) { type = .q6_K }
                    iFFNDown += 1
                }
            }
            result[i] = Self.fallback(type, rowLength: t.rowLength)
        }
        return result
    }

    /// llama.cpp's `use_more_bits`: the first and last eighth of the layers and every third
    /// layer between them.
    public static func useMoreBits(_ layer: Int, _ layers: Int) -> Bool {
        layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
    }

    /// llama.cpp's `tensor_type_fallback` for rows that are not whole 256-element super-blocks
    /// (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0); nil where even 32-element blocks do not fit
    /// (llama.cpp writes F16 there; FlexRun keeps the source's type).
    static func fallback(_ type: GGMLType, rowLength: Int) -> GGMLType? {
        var t = type
        if rowLength % t.blockElements != 0 {
            switch t {
            case .q4_K: t = .q5_0
            case .q5_K: t = .q5_1
            case .q6_K: t = .q8_0
            default: break
            }
        }
        return rowLength % t.blockElements == 0 ? t : nil
    }

    /// llama.cpp's `tensor_allows_quantization` for the tensors of a dense llama-like model:
    /// matrices named `*weight`, except norms and expert gates.
    static func isQuantizable(_ t: TensorInfo) -> Bool {
        t.shape.count >= 2 && t.name.hasSuffix("weight") && !t.name.contains("_norm.weight") && !t.name.contains("ffn_gate_inp.weight")
    }

    static func isAttentionV(_ name: String) -> Bool {
        name.contains("attn_v.weight") || name.contains("attn_qkv.weight") || name.contains("attn_kv_b.weight")
    }

    /// The indices of `tensors` in the order llama.cpp's quantizer visits and writes them: by
    /// layer (tensors outside the blocks first), then by name (`weight_name_comparer`).
    public static func llamaCppOrder(_ tensors: [TensorInfo]) -> [Int] {
        tensors.indices.sorted { a, b in
            let (la, lb) = (layer(of: tensors[a].name), layer(of: tensors[b].name))
            return la != lb ? la < lb : tensors[a].name.utf8.lexicographicallyPrecedes(tensors[b].name.utf8)
        }
    }

    /// N of `blk.N.…`, −1 for tensors outside the blocks (they sort first, as in llama.cpp).
    static func layer(of name: String) -> Int {
        guard name.hasPrefix("blk.") else { return -1 }
        return Int(name.dropFirst(4).prefix { $0.isNumber }) ?? -1
    }
}
