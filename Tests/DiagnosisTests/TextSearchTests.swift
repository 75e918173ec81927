import Testing
import TestSupport
@testable import Diagnosis

/// Diagnosis searches console lines with its own byte search (TextSearch.swift); it must find
/// exactly what the standard library's search finds.
struct TextSearchTests {
    @Test func findsTheFirstOccurrence() {
        let line = "rcu: INFO: rcu_sched detected stalls on CPUs/tasks:"
        let r = line.range(of: "detected stalls")
        #expect(r.map { String(line[$0]) } == "detected stalls")
        #expect(r.map { line.distance(from: line.startIndex, to: $0.lowerBound) } == 21)
        #expect(line.includes("CPUs/tasks:"))            // at the very end
        #expect(!line.includes("CPUs/tasks::"))          // runs past the end
        #expect(!line.includes("self-detected"))
        #expect("aaab".range(of: "aab").map { "aaab".distance(from: "aaab".startIndex, to: $0.lowerBound) } == 1)
        #expect("".range(of: "a") == nil)
        #expect("abc".range(of: "") == "abc".startIndex..<"abc".startIndex)
    }

    @Test func rangesIndexTheSubstringItself() {
        let line = "[   12.5] INFO: task kworker/0:1:17 blocked for more than 120 seconds."
        let tail = line[line.range(of: "INFO: task ")!.upperBound...]
        let blocked = tail.range(of: " blocked for more than ")!
        #expect(tail[..<blocked.lowerBound] == "kworker/0:1:17")
        #expect(tail[blocked.upperBound...] == "120 seconds.")
    }

    @Test func agreesWithTheStandardLibraryOnRandomText() {
        var rng = SplitMix64(seed: 0x7E57_5EA2)
        let alphabet = Array("ab c")
        func text(_ n: Int) -> String { String((0..<n).map { _ in alphabet[Int(rng.next() % 4)] }) }
        for _ in 0..<2000 {
            let haystack = text(Int(rng.next() % 24)), needle = text(1 + Int(rng.next() % 4))
            let expected = haystack.firstRange(of: needle)
            #expect(haystack.range(of: needle) == expected, "\"\(needle)\" in \"\(haystack)\"")
            #expect(haystack.includes(needle) == haystack.contains(needle))
        }
    }
}
