import CommandLineParsing
import Testing

/// The parser kite's commands are declared for: matching, every kind of bad input as one
/// line, and help rendered from the declarations.
struct CommandLineParsingTests {
    static let parser = CommandLineParser(program: "tool", abstract: "A tool.", commands: [
        CommandSpec(name: "go", abstract: "Go somewhere.", discussion: "First paragraph.\n\nSecond paragraph.", options: [
            .single("to", "place", help: "Where to go.", required: true),
            .single("speed", "n", help: "How fast.", default: "1"),
            .repeated("stop", "place", help: "A stop on the way (repeatable)."),
            .flag("quiet", help: "Say nothing."),
        ]),
        CommandSpec(name: "read", abstract: "Read files.", options: [.flag("json", help: "As JSON.")],
                    arguments: [ArgumentSpec("file", help: "Files to read.", repeated: true, required: false)]),
        CommandSpec(name: "ask", abstract: "Ask one thing.", options: [],
                    arguments: [ArgumentSpec("socket", help: "Whom to ask.")]),
    ])

    func parse(_ words: [String]) throws -> (String, ParsedOptions) {
        guard case .run(let command, let options) = try Self.parser.parse(words) else {
            Issue.record("help instead of a command for \(words)")
            throw UsageError("help")
        }
        return (command, options)
    }

    @Test func optionsFlagsAndRepeatsAreMatched() throws {
        let (command, o) = try parse(["go", "--to", "home", "--stop=shop", "--quiet", "--stop", "park", "--speed=3"])
        #expect(command == "go")
        #expect(o.value("to") == "home")
        #expect(try o.int("speed", default: 1) == 3)
        #expect(o.values("stop") == ["shop", "park"])
        #expect(o.flag("quiet"))
        #expect(o.arguments.isEmpty)
        let (_, d) = try parse(["go", "--to", "x"])
        #expect(try d.int("speed", default: 1) == 1 && d.values("stop").isEmpty && !d.flag("quiet"))
        #expect(try d.int("speed") == nil)
        // A value may start with a dash; = keeps an empty value.
        let (_, n) = try parse(["go", "--to", "-x", "--speed", "-3"])
        #expect(n.value("to") == "-x")
        #expect(try n.int("speed") == -3)
        #expect(try parse(["go", "--to="]).1.value("to") == "")
        // Given again, the last value counts (a wrapper can append an override).
        #expect(try parse(["go", "--to", "a", "--to", "b"]).1.value("to") == "b")
    }

    @Test func argumentsStandardInputAndDoubleDash() throws {
        let (_, o) = try parse(["read", "a.log", "-", "--json", "--", "--not-an-option"])
        #expect(o.arguments == ["a.log", "-", "--not-an-option"])
        #expect(o.flag("json"))
        #expect(try parse(["read"]).1.arguments.isEmpty)
        #expect(try parse(["ask", "/run/s"]).1.arguments == ["/run/s"])
    }

    @Test(arguments: [
        (["go"], "missing '--to <place>'"),
        (["go", "--to"], "missing value for '--to <place>'"),
        (["go", "--to", "a", "--fast"], "unknown option '--fast' for go"),
        (["go", "--to", "a", "-f"], "unknown option '-f'"),
        (["go", "--to", "a", "--quiet=yes"], "--quiet takes no value"),
        (["go", "--to", "a", "extra"], "unexpected argument 'extra'"),
        (["ask"], "missing '<socket>'"),
        (["ask", "a", "b"], "unexpected argument 'b'"),
        (["fly"], "unknown command 'fly' (known: go, read, ask)"),
        (["--to", "a"], "'--to' comes before a command"),
        (["help", "fly"], "unknown command 'fly'"),
    ])
    func badInputIsOneLine(words: [String], message: String) {
        do {
            _ = try Self.parser.parse(words)
            Issue.record("\(words) parsed")
        } catch {
            #expect(error.message.hasPrefix(message) || error.message.contains(message), "\(error.message)")
            #expect(!error.message.contains("\n"))
        }
    }

    @Test func aNumberThatIsNotOneIsAnError() throws {
        let (_, o) = try parse(["go", "--to", "a", "--speed", "fast"])
        #expect(throws: UsageError("--speed 'fast' is not a whole number")) { _ = try o.int("speed", default: 1) }
    }

    @Test func helpIsAskedForManyWays() throws {
        for words in [[], ["--help"], ["-h"], ["help"]] {
            guard case .help(let text) = try Self.parser.parse(words) else { Issue.record("\(words)"); continue }
            #expect(text.contains("OVERVIEW: A tool.") && text.contains("go") && text.contains("Read files."))
        }
        for words in [["go", "--help"], ["go", "--to", "x", "-h"], ["help", "go"]] {
            guard case .help(let text) = try Self.parser.parse(words) else { Issue.record("\(words)"); continue }
            #expect(text.contains("OVERVIEW: Go somewhere."), "\(words)")
        }
        // After --, --help is an argument.
        #expect(try parse(["read", "--", "--help"]).1.arguments == ["--help"])
    }

    @Test func commandHelpShowsEveryOptionWrapped() throws {
        guard case .help(let text) = try Self.parser.parse(["go", "--help"]) else { Issue.record("no help"); return }
        #expect(text.contains("First paragraph.\n\nSecond paragraph."))
        #expect(text.contains("USAGE: tool go --to <place> [--speed <n>] [--stop <place>] ... [--quiet]"))
        #expect(text.contains("  --to <place>            Where to go.\n"))
        #expect(text.contains("  --speed <n>             How fast. (default: 1)\n"))
        #expect(text.contains("  --quiet                 Say nothing.\n"))
        #expect(text.contains("  -h, --help              Show help information.\n"))
        for line in text.split(separator: "\n") { #expect(line.count <= 80, "\(line)") }
        guard case .help(let read) = try Self.parser.parse(["read", "--help"]) else { Issue.record("no help"); return }
        #expect(read.contains("USAGE: tool read [--json] [<file> ...]"))
        #expect(read.contains("ARGUMENTS:\n  <file>                  Files to read.\n"))
    }

    @Test func longTextWrapsUnderItsColumn() throws {
        let long = Array(repeating: "word", count: 40).joined(separator: " ")
        let rendered = CommandLineParser(program: "p", abstract: "a", commands: [
            CommandSpec(name: "c", abstract: "c", options: [.single("a-very-long-option-name", "value", help: long)]),
        ]).help(for: CommandSpec(name: "c", abstract: "c", options: [.single("a-very-long-option-name", "value", help: long)]))
        let lines = rendered.split(separator: "\n")
        let option = try #require(lines.firstIndex { $0.hasPrefix("  --a-very-long-option-name <value>") })
        // The label is wider than its column: the text starts on the next line, indented.
        #expect(lines[option] == "  --a-very-long-option-name <value>")
        #expect(lines[option + 1].hasPrefix(String(repeating: " ", count: 26) + "word"))
        for line in lines { #expect(line.count <= 80, "\(line)") }
    }
}
