/// Substring search for console and log lines, on their UTF-8 bytes.
///
/// Not the standard library's `contains(_:)` and `firstRange(of:)` for strings: those live in
/// _StringProcessing, build a Boyer-Moore table (a Dictionary) on every call, and their code
/// is one 390 KiB section of the executable that every console line would keep resident
/// (Docs/Lighter-findings.md). Kernel log text is ASCII; for other text this compares bytes,
/// not canonically equivalent characters.
extension StringProtocol {
    /// The first occurrence of `pattern`, as a range of this text's indices.
    func range(of pattern: String) -> Range<Index>? {
        let text = utf8, needle = pattern.utf8
        guard let first = needle.first else { return startIndex..<startIndex }
        var i = text.startIndex
        while let at = text[i...].firstIndex(of: first) {
            var t = at, n = needle.startIndex
            while n != needle.endIndex, t != text.endIndex, text[t] == needle[n] {
                text.formIndex(after: &t)
                needle.formIndex(after: &n)
            }
            if n == needle.endIndex { return at..<t }
            if t == text.endIndex { return nil }
            i = text.index(after: at)
        }
        return nil
    }

    /// Whether `pattern` occurs in this text.
    public func includes(_ pattern: String) -> Bool { range(of: pattern) != nil }
}
