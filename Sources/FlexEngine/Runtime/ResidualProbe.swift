/// Watches the residual stream of a forward pass, block by block (package API for pruning).
///
/// The block-importance metrics (ShortGPT's Block Influence, the angular distance between
/// layers) compare the residual before and after a block; EvoP's calibration sampling pools the
/// final hidden state; the greedy evaluators keep the residual at each block input so a pass can
/// resume there. One protocol covers the four, so the forward pass has a single hook and the
/// normal paths pay one nil check per block.
package protocol ResidualProbe: AnyObject {
    /// Before block `block` (index in execution order) runs, or is skipped; `x` is `rows` rows
    /// of the embedding width. Called for skipped blocks too.
    func before(block: Int, x: UnsafePointer<Float>, rows: Int)
    /// After block `block`: for a skipped block, `x` is unchanged.
    func after(block: Int, x: UnsafePointer<Float>, rows: Int)
    /// The last hidden state, before the output norm.
    func final(x: UnsafePointer<Float>, rows: Int)
    /// Writes the residual at the input of `block` (for a resumed pass).
    func restore(block: Int, into x: UnsafeMutablePointer<Float>, rows: Int)
}

package extension ResidualProbe {
    func before(block: Int, x: UnsafePointer<Float>, rows: Int) {}
    func after(block: Int, x: UnsafePointer<Float>, rows: Int) {}
    func final(x: UnsafePointer<Float>, rows: Int) {}
    func restore(block: Int, into x: UnsafeMutablePointer<Float>, rows: Int) { preconditionFailure("this probe cannot resume") }
}
