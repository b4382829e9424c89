import Testing
@testable import FlexEngine

@Suite struct StopStringsTests {
    /// Fed piece by piece, in every split of the text: the output is the text before the first
    /// stop string, and nothing past it (no part of a stop string) is emitted at any point.
    @Test func everySplitStopsAtTheFirstStopString() {
        let text = "The answer: 42.\n\nUser: and then?"
        let stops = ["\n\nUser:", "then", "ans", "xyz"]
        for cut1 in 0...text.count {
            for cut2 in cut1...text.count {
                var f = StopStrings(stops)
                let chars = Array(text)
                var out = f.feed(String(chars[..<cut1]))
                out += f.feed(String(chars[cut1..<cut2]))
                out += f.feed(String(chars[cut2...]))
                out += f.flush()
                #expect(out == "The ", "cuts \(cut1) \(cut2): \(out.debugDescription)")
                #expect(f.matched == "ans")
            }
        }
    }

    @Test func heldBackTextComesOutWhenNoStopFollows() {
        var f = StopStrings(["\n\nUser:"])
        #expect(f.feed("Hello\n") == "Hello")
        #expect(f.feed("\nUse") == "")
        #expect(f.feed("d it") == "\n\nUsed it")
        #expect(f.feed(" \n") == " ")
        #expect(f.flush() == "\n" && f.matched == nil)
        var none = StopStrings(["", ""])
        #expect(none.feed("abc") == "abc" && none.flush() == "")
    }

    @Test func theEarliestStopWinsOverAnEarlierListedOne() {
        var f = StopStrings(["world", "lo"])
        #expect(f.feed("hello world") == "hel" && f.matched == "lo")
        #expect(f.feed("more") == "" && f.flush() == "")
    }
}
