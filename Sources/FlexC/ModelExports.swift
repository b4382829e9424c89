import CFlexRun
import FlexEngine
import FlexSystem

// The model half of flexrun.h. Each export checks its arguments before any engine code runs:
// engine preconditions guard programmer errors inside Swift, and C input must never reach one.

/// `streaming` defaults to whether a cgroup memory limit is in force, as `Engine` decides: sessions
/// follow that limit by default, and a model opened for memory would first copy weights out of
/// the mapping (the x8 layout) that a capped session then drops, which can pass the limit at load.
@_cdecl("flexrun_model_default_params")
public func cModelDefaultParams() -> flexrun_model_params {
    flexrun_model_params(streaming: CgroupMemory.current()?.cap != nil, interleave_weights: true)
}

@_cdecl("flexrun_model_load")
public func cModelLoad(_ path: UnsafePointer<CChar>?, _ params: flexrun_model_params,
                       _ out: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    guarded { () throws(CFailure) in
        guard let out else { throw .null("out") }
        out.pointee = nil
        let path = try string(path, "path")
        guard !path.isEmpty else { throw .invalid("path is empty") }
        let m = try engine { () throws(EngineError) in
            try Model(path: path, streaming: params.streaming, interleave: params.interleave_weights)
        }
        out.pointee = ModelHandle(m).opaque
    }
}

@_cdecl("flexrun_model_free")
public func cModelFree(_ model: OpaquePointer?) {
    if let model { ModelHandle.release(model) }
}

@_cdecl("flexrun_model_n_vocab")
public func cModelVocabulary(_ model: OpaquePointer?) -> Int32 {
    ModelHandle.from(model).map { Int32($0.model.config.vocabularySize) } ?? 0
}

@_cdecl("flexrun_model_n_ctx_train")
public func cModelTrainedContext(_ model: OpaquePointer?) -> Int32 {
    ModelHandle.from(model).map { Int32(clamping: $0.model.config.trainedContextLength) } ?? 0
}

@_cdecl("flexrun_model_n_layer")
public func cModelLayers(_ model: OpaquePointer?) -> Int32 {
    ModelHandle.from(model).map { Int32($0.model.config.layerCount) } ?? 0
}

@_cdecl("flexrun_model_has_chat_template")
public func cModelHasChatTemplate(_ model: OpaquePointer?) -> Bool {
    ModelHandle.from(model)?.model.chatTemplate != nil
}

@_cdecl("flexrun_model_token_is_eog")
public func cModelTokenIsEndOfGeneration(_ model: OpaquePointer?, _ token: Int32) -> Bool {
    ModelHandle.from(model)?.model.stopTokens.contains(token) ?? false
}

@_cdecl("flexrun_model_token_bos")
public func cModelBOS(_ model: OpaquePointer?) -> Int32 {
    ModelHandle.from(model)?.model.tokenizer.bosToken ?? -1
}

@_cdecl("flexrun_model_desc")
public func cModelDescription(_ model: OpaquePointer?) -> UnsafePointer<CChar>? {
    // The array is stored in the handle and never mutated, so its buffer outlives this call.
    ModelHandle.from(model)?.description.withUnsafeBufferPointer { $0.baseAddress }
}
