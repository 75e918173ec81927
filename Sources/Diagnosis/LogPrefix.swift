// How kernel messages sit inside the log files people have: a serial console capture is the
// messages themselves, but syslog, the journal and dmesg put their own prefix in front of
// every line, and rsyslog folds a multi-line message into one line with "#012" between the
// lines. `LogPrefix.kernelMessages(in:)` turns one line of any of these into the kernel
// message lines it holds, which `ConsoleWatcher` then reads as if they came from a console.

public enum LogPrefix {
    /// The longest line read from a log file, in bytes: rsyslog's default message limit is
    /// 8 KiB and a folded call trace fits; the rest of a longer line is dropped.
    public static let maximumLineLength = 64 * 1024

    /// The kernel message lines in one line of a log file, without its syslog, journal or
    /// dmesg prefix, its "#012"-folded lines split apart. Empty for a line another program
    /// logged ("Mar  3 10:00:01 host systemd[1]: Started ..."). A line with no prefix this
    /// knows is returned as it is.
    ///
    /// Prefixes read:
    /// - syslog and `journalctl`: "Mar  3 10:00:01 host kernel: MSG",
    ///   "Mar 03 10:00:01.123456 host kernel: MSG", "2025-03-03T10:00:01.123456+00:00 host kernel: MSG";
    /// - `journalctl -o short-monotonic`: "[  123.456789] host kernel: MSG" (the time stamp is kept);
    /// - `dmesg -T`: "[Mon Mar  3 10:00:01 2025] MSG"; `dmesg -x`: "kern  :warn  : MSG".
    public static func kernelMessages(in line: Substring) -> [Substring] {
        var message = line
        while let last = message.last, last == "\r" || last == "\n" { message = message.dropLast() }
        if let (tag, rest) = splittingSyslogHeader(message) {
            guard isKernelTag(tag) else { return [] }
            message = rest
        } else if let rest = droppingMonotonicJournalHost(message) {
            message = rest
        } else if let rest = droppingDmesgWallClock(message) {
            message = rest
        } else if let rest = droppingDmesgFacility(message) {
            message = rest
        }
        guard message.includes("#0") else { return [message] }
        return unfoldingRsyslogEscapes(message)
    }

    /// "kernel", or "kernel[0]" as some daemons write it.
    private static func isKernelTag(_ tag: Substring) -> Bool {
        tag == "kernel" || (tag.hasPrefix("kernel[") && tag.last == "]")
    }

    // MARK: syslog and the journal

    private static let months: Set<Substring> = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// "Mar  3 10:00:01 host kernel: MSG" or "2025-03-03T10:00:01+00:00 host kernel: MSG" ->
    /// ("kernel", "MSG"); nil when the line does not start with such a header.
    static func splittingSyslogHeader(_ line: Substring) -> (tag: Substring, message: Substring)? {
        var rest: Substring
        if let afterDate = droppingTraditionalDate(line) {
            rest = afterDate
        } else if let afterDate = droppingISODate(line) {
            rest = afterDate
        } else {
            return nil
        }
        // The host name (some logs leave it out), then the tag ("kernel", "systemd[1]") up to ": ".
        guard rest.first == " " else { return nil }
        rest = rest.dropFirst()
        guard let firstEnd = rest.firstIndex(of: " ") ?? (rest.isEmpty ? nil : rest.endIndex),
              firstEnd != rest.startIndex else { return nil }
        if rest[rest.index(before: firstEnd)] != ":" {
            guard firstEnd < rest.endIndex else { return nil }
            rest = rest[rest.index(after: firstEnd)...]
        }
        guard let colon = rest.prefix(64).range(of: ": ") ?? (rest.last == ":" ? rest.index(before: rest.endIndex)..<rest.endIndex : nil)
        else { return nil }
        let tag = rest[..<colon.lowerBound]
        guard !tag.isEmpty, !tag.includes(" ") else { return nil }
        return (tag, rest[colon.upperBound...])
    }

    /// "Mar  3 10:00:01" or "Mar 03 10:00:01.123456" (journalctl's short-precise).
    private static func droppingTraditionalDate(_ line: Substring) -> Substring? {
        guard months.contains(line.prefix(3)), line.dropFirst(3).first == " " else { return nil }
        var rest = line.dropFirst(4)
        if rest.first == " " { rest = rest.dropFirst() }
        let day = rest.prefix(while: \.isASCIIDigit)
        guard (1...2).contains(day.count) else { return nil }
        rest = rest[day.endIndex...]
        guard rest.first == " " else { return nil }
        return droppingClockTime(rest.dropFirst())
    }

    /// "2025-03-03T10:00:01", then fractions and a zone ("+00:00", "+0000", "Z").
    private static func droppingISODate(_ line: Substring) -> Substring? {
        guard line.startsWithISODateTime else { return nil }
        guard let afterTime = droppingClockTime(line.dropFirst(11)) else { return nil }
        var rest = afterTime
        if rest.first == "Z" { rest = rest.dropFirst() }
        if rest.first == "+" || rest.first == "-" {
            let zone = rest.dropFirst().prefix(while: { $0.isASCIIDigit || $0 == ":" })
            guard (2...5).contains(zone.count) else { return nil }
            rest = rest[zone.endIndex...]
        }
        return rest
    }

    /// "10:00:01" with optional ".123456".
    private static func droppingClockTime(_ text: Substring) -> Substring? {
        let clock = Array(text.utf8.prefix(8))
        guard clock.count == 8, clock[2] == UInt8(ascii: ":"), clock[5] == UInt8(ascii: ":"),
              [0, 1, 3, 4, 6, 7].allSatisfy({ (0x30...0x39).contains(clock[$0]) }) else { return nil }
        var rest = text.dropFirst(8)
        if rest.first == "." || rest.first == "," {
            let fraction = rest.dropFirst().prefix(while: \.isASCIIDigit)
            guard !fraction.isEmpty else { return nil }
            rest = rest[fraction.endIndex...]
        }
        return rest
    }

    /// journalctl -o short-monotonic: "[  123.456789] host kernel: MSG" -> "[  123.456789] MSG".
    /// Only the exact tag "kernel" is taken, so a console line that happens to hold a word
    /// and a colon after its time stamp stays as it is.
    private static func droppingMonotonicJournalHost(_ line: Substring) -> Substring? {
        guard let (_, afterStamp) = line.splittingPrintkTimestamp(), afterStamp.first == " " else { return nil }
        let rest = afterStamp.dropFirst()
        guard let hostEnd = rest.firstIndex(of: " "), hostEnd != rest.startIndex,
              rest[rest.index(after: hostEnd)...].hasPrefix("kernel: ") else { return nil }
        let stamp = line[..<afterStamp.startIndex]
        let message = rest[rest.index(after: hostEnd)...].dropFirst("kernel: ".count)
        // Keep the stamp: it tells the reports apart in time. A new Substring over a new String.
        return Substring(String(stamp) + " " + String(message))
    }

    /// dmesg -T: "[Mon Mar  3 10:00:01 2025] MSG".
    private static func droppingDmesgWallClock(_ line: Substring) -> Substring? {
        guard line.first == "[", let close = line.prefix(40).firstIndex(of: "]") else { return nil }
        let inside = line[line.index(after: line.startIndex)..<close]
        let weekday = inside.prefix(3)
        guard ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(weekday),
              droppingTraditionalDate(inside.dropFirst(4)) != nil else { return nil }
        var rest = line[line.index(after: close)...]
        if rest.first == " " { rest = rest.dropFirst() }
        return rest
    }

    /// dmesg -x: "kern  :warn  : MSG" (facility, level).
    private static func droppingDmesgFacility(_ line: Substring) -> Substring? {
        let facilities = ["kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news"]
        guard let facility = facilities.first(where: { line.hasPrefix($0) }) else { return nil }
        var rest = line.dropFirst(facility.count).trimmingLeadingSpaces()
        guard rest.first == ":" else { return nil }
        rest = rest.dropFirst()
        let level = rest.prefix(while: { $0.isASCII && $0.isLetter })
        guard ["emerg", "alert", "crit", "err", "warn", "notice", "info", "debug"].contains(level) else { return nil }
        rest = rest[level.endIndex...].trimmingLeadingSpaces()
        guard rest.first == ":" else { return nil }
        rest = rest.dropFirst()
        if rest.first == " " { rest = rest.dropFirst() }
        return rest
    }

    // MARK: rsyslog's escapes

    /// rsyslog writes control characters as "#" and three octal digits: "#012" a newline,
    /// "#011" a tab. A folded message becomes the lines it was; other escapes are dropped.
    static func unfoldingRsyslogEscapes(_ message: Substring) -> [Substring] {
        var lines: [Substring] = []
        var current = ""
        var index = message.startIndex
        var folded = false
        while index < message.endIndex {
            let character = message[index]
            if character == "#", let code = octalEscape(in: message[index...]) {
                folded = true
                index = message.index(index, offsetBy: 4)
                switch code {
                case 0o12: lines.append(Substring(current)); current = ""
                case 0o11: current.append("\t")
                default: break   // other control characters: dropped, as the console watcher drops them
                }
                continue
            }
            current.append(character)
            index = message.index(after: index)
        }
        guard folded else { return [message] }
        lines.append(Substring(current))
        return lines
    }

    /// The value of "#ooo" at the start of `text` when it is an escaped control character (< 0o40).
    private static func octalEscape(in text: Substring) -> Int? {
        let digits = Array(text.utf8.dropFirst().prefix(3))
        guard digits.count == 3, digits.allSatisfy({ (0x30...0x37).contains($0) }) else { return nil }
        let value = digits.reduce(0) { $0 * 8 + Int($1 - 0x30) }
        return value < 0o40 ? value : nil
    }
}
