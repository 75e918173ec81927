/// Parses a memory size: `512M`, `2G`, `1024K`, a plain number of MiB (`768`), with an
/// optional `iB`/`B` suffix (`512MiB`). Returns bytes, or nil for anything else.
public enum MemorySize {
    public static func parse(_ text: String) -> UInt64? {
        var s = Substring(text.trimmingCharacters(in: " \t"))
        for suffix in ["iB", "ib", "B", "b"] where s.hasSuffix(suffix) && s.count > suffix.count {
            s = s.dropLast(suffix.count)
            break
        }
        guard let last = s.last else { return nil }
        var shift: UInt64 = 20
        if !last.isNumber {
            switch last {
            case "K", "k": shift = 10
            case "M", "m": shift = 20
            case "G", "g": shift = 30
            case "T", "t": shift = 40
            default: return nil
            }
            s = s.dropLast()
        }
        guard !s.isEmpty, s.allSatisfy({ $0.isASCII && $0.isNumber }), let n = UInt64(s), n > 0 else { return nil }
        let (bytes, overflow) = n.multipliedReportingOverflow(by: 1 << shift)
        return overflow ? nil : bytes
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        let chars = Set(set)
        var s = Substring(self)
        while let f = s.first, chars.contains(f) { s = s.dropFirst() }
        while let l = s.last, chars.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
