// Kite's command-line parser: commands declared as data (options, arguments, help text),
// arguments matched against them with no reflection, help rendered from the same
// declarations. It replaces swift-argument-parser, whose type lookups, conformance scans
// and Mirror cost about 2 ms and 2.5 MiB of RSS at every start, and which pulled in
// FoundationEssentials (Docs/Lighter-findings.md).

/// One `--name` option of a command.
public struct OptionSpec: Sendable {
    public enum Kind: Sendable {
        /// `--name`: present or not.
        case flag
        /// `--name VALUE` or `--name=VALUE`; given again, the last value counts.
        case single
        /// `--name VALUE`, any number of times, in order.
        case repeated
    }

    public let name: String
    public let kind: Kind
    /// What the value is, in the help (`path`, `n`); unused for a flag.
    public let valueName: String
    public let help: String
    /// Shown as "(default: ...)" after the help, when the default is worth saying.
    public let defaultText: String?
    public let required: Bool

    public static func flag(_ name: String, help: String) -> OptionSpec {
        OptionSpec(name: name, kind: .flag, valueName: "", help: help, defaultText: nil, required: false)
    }

    public static func single(_ name: String, _ valueName: String, help: String, default defaultText: String? = nil,
                              required: Bool = false) -> OptionSpec {
        OptionSpec(name: name, kind: .single, valueName: valueName, help: help, defaultText: defaultText, required: required)
    }

    public static func repeated(_ name: String, _ valueName: String, help: String) -> OptionSpec {
        OptionSpec(name: name, kind: .repeated, valueName: valueName, help: help, defaultText: nil, required: false)
    }

    /// `--name <value>`, or `--name` for a flag.
    var synopsis: String { kind == .flag ? "--\(name)" : "--\(name) <\(valueName)>" }
}

/// The positional arguments of a command: one, or any number (`repeated`).
public struct ArgumentSpec: Sendable {
    public let valueName: String
    public let help: String
    public let repeated: Bool
    public let required: Bool

    public init(_ valueName: String, help: String, repeated: Bool = false, required: Bool = true) {
        self.valueName = valueName
        self.help = help
        self.repeated = repeated
        self.required = required
    }

    var synopsis: String {
        let core = "<\(valueName)>" + (repeated ? " ..." : "")
        return required ? core : "[\(core)]"
    }
}

/// A subcommand: what it does, its options and arguments, and the help's longer text.
public struct CommandSpec: Sendable {
    public let name: String
    public let abstract: String
    public let discussion: String
    public let options: [OptionSpec]
    public let arguments: [ArgumentSpec]

    public init(name: String, abstract: String, discussion: String = "", options: [OptionSpec],
                arguments: [ArgumentSpec] = []) {
        self.name = name
        self.abstract = abstract
        self.discussion = discussion
        self.options = options
        self.arguments = arguments
    }
}

/// A bad command line: one line for the user (exit status 2).
public struct UsageError: Error, Equatable, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What a command line asked for.
public enum ParseResult: Sendable {
    /// Run `command` with these values.
    case run(command: String, ParsedOptions)
    /// Print this help on stdout and exit 0 (`--help`, `help`, or no command at all).
    case help(String)
}

/// The values given to one command, by option name.
public struct ParsedOptions: Sendable {
    var singles: [String: String] = [:]
    var lists: [String: [String]] = [:]
    var flags: Set<String> = []
    /// The positional arguments, in order.
    public internal(set) var arguments: [String] = []

    public init() {}

    public func flag(_ name: String) -> Bool { flags.contains(name) }
    public func value(_ name: String) -> String? { singles[name] }
    public func values(_ name: String) -> [String] { lists[name] ?? [] }

    /// The option's value as an integer, `defaultValue` when it was not given.
    public func int(_ name: String, default defaultValue: Int) throws(UsageError) -> Int {
        try int(name) ?? defaultValue
    }

    /// The option's value as an integer, nil when it was not given.
    public func int(_ name: String) throws(UsageError) -> Int? {
        guard let text = singles[name] else { return nil }
        guard let number = Int(text) else { throw UsageError("--\(name) '\(text)' is not a whole number") }
        return number
    }
}

/// A program's commands, and the parser that matches a command line against them.
public struct CommandLineParser: Sendable {
    public let program: String
    public let abstract: String
    public let commands: [CommandSpec]

    public init(program: String, abstract: String, commands: [CommandSpec]) {
        self.program = program
        self.abstract = abstract
        self.commands = commands
    }

    /// Matches `arguments` (without the program's name) against the commands.
    public func parse(_ arguments: [String]) throws(UsageError) -> ParseResult {
        guard let first = arguments.first, first != "-h", first != "--help" else { return .help(help()) }
        if first == "help" {
            guard arguments.count > 1 else { return .help(help()) }
            guard let command = commands.first(where: { $0.name == arguments[1] }) else {
                throw UsageError("unknown command '\(arguments[1])' (known: \(commandNames))")
            }
            return .help(help(for: command))
        }
        guard let command = commands.first(where: { $0.name == first }) else {
            throw UsageError(first.hasPrefix("-")
                             ? "'\(first)' comes before a command: \(program) COMMAND [OPTIONS] (commands: \(commandNames))"
                             : "unknown command '\(first)' (known: \(commandNames))")
        }
        let rest = Array(arguments.dropFirst())
        if rest.prefix(while: { $0 != "--" }).contains(where: { $0 == "-h" || $0 == "--help" }) {
            return .help(help(for: command))
        }
        return .run(command: command.name, try Self.parse(rest, as: command))
    }

    private var commandNames: String { commands.map(\.name).joined(separator: ", ") }

    static func parse(_ arguments: [String], as command: CommandSpec) throws(UsageError) -> ParsedOptions {
        var parsed = ParsedOptions()
        var index = 0
        var onlyArguments = false
        while index < arguments.count {
            let word = arguments[index]
            index += 1
            if onlyArguments || word == "-" || !word.hasPrefix("-") {
                parsed.arguments.append(word)
                continue
            }
            if word == "--" {
                onlyArguments = true
                continue
            }
            guard word.hasPrefix("--") else { throw UsageError("unknown option '\(word)'") }
            var name = String(word.dropFirst(2))
            var inlineValue: String?
            if let equals = name.firstIndex(of: "=") {
                inlineValue = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            guard let option = command.options.first(where: { $0.name == name }) else {
                throw UsageError("unknown option '--\(name)' for \(command.name)")
            }
            if option.kind == .flag {
                if inlineValue != nil { throw UsageError("--\(name) takes no value") }
                parsed.flags.insert(name)
                continue
            }
            let value: String
            if let inlineValue {
                value = inlineValue
            } else {
                guard index < arguments.count else { throw UsageError("missing value for '\(option.synopsis)'") }
                value = arguments[index]
                index += 1
            }
            if option.kind == .single {
                parsed.singles[name] = value   // the last one counts, so a wrapper can append an override
            } else {
                parsed.lists[name, default: []].append(value)
            }
        }
        for option in command.options where option.required && parsed.singles[option.name] == nil {
            throw UsageError("missing '\(option.synopsis)'")
        }
        let positional = command.arguments
        let takesAny = positional.last?.repeated ?? false
        if !takesAny && parsed.arguments.count > positional.count {
            let extra = parsed.arguments[positional.count]
            throw UsageError("unexpected argument '\(extra)'")
        }
        for (position, argument) in positional.enumerated() where argument.required && !argument.repeated {
            if parsed.arguments.count <= position { throw UsageError("missing '<\(argument.valueName)>'") }
        }
        return parsed
    }

    // MARK: - Help

    /// The program's help: what it is, and its commands.
    public func help() -> String {
        var text = Self.wrap("OVERVIEW: \(abstract)", width: 80, indent: "") + "\n\nUSAGE: \(program) <command>\n\nCOMMANDS:\n"
        let width = (commands.map(\.name.count).max() ?? 0) + 4
        for command in commands {
            text += Self.column("  " + command.name, width: width + 2, text: command.abstract)
        }
        text += "\n  See '\(program) help <command>' or '\(program) <command> --help' for a command's options.\n"
        return text
    }

    /// One command's help: what it does, its usage line, its longer text and every option.
    public func help(for command: CommandSpec) -> String {
        var text = Self.wrap("OVERVIEW: \(command.abstract)", width: 80, indent: "") + "\n\n"
        let paragraphs = command.discussion.split(separator: "\n\n", omittingEmptySubsequences: true)
        if !paragraphs.isEmpty {
            text += paragraphs.map { Self.wrap(String($0), width: 80, indent: "") }.joined(separator: "\n\n") + "\n\n"
        }
        var usage = ["\(program) \(command.name)"]
        for option in command.options {
            usage.append(option.required ? option.synopsis : "[\(option.synopsis)]" + (option.kind == .repeated ? " ..." : ""))
        }
        usage += command.arguments.map(\.synopsis)
        text += Self.wrapItems(usage, width: 80, first: "USAGE: ", indent: "       ") + "\n\n"
        if !command.arguments.isEmpty {
            text += "ARGUMENTS:\n"
            for argument in command.arguments {
                text += Self.column("  <\(argument.valueName)>", width: 26, text: argument.help)
            }
            text += "\n"
        }
        text += "OPTIONS:\n"
        for option in command.options {
            var help = option.help
            if let defaultText = option.defaultText { help += " (default: \(defaultText))" }
            text += Self.column("  " + option.synopsis, width: 26, text: help)
        }
        text += Self.column("  -h, --help", width: 26, text: "Show help information.")
        return text
    }

    /// `label` padded to `width`, then `text` wrapped to 80 columns and indented under itself;
    /// a label too long for its column gets a line of its own.
    static func column(_ label: String, width: Int, text: String) -> String {
        let indent = String(repeating: " ", count: width)
        let body = wrap(text, width: 80, indent: indent)
        if label.count + 2 > width { return label + "\n" + body + "\n" }
        return label + String(repeating: " ", count: width - label.count) + String(body.dropFirst(width)) + "\n"
    }

    /// `items` separated by spaces, wrapped between items (never inside one) to `width`
    /// columns; the first line starts with `first`, the rest with `indent`.
    static func wrapItems(_ items: [String], width: Int, first: String, indent: String) -> String {
        var lines: [String] = []
        var line = first
        var lineIsEmpty = true   // nothing after the line's prefix yet
        for item in items {
            if !lineIsEmpty && line.count + 1 + item.count > width {
                lines.append(line)
                line = indent
                lineIsEmpty = true
            }
            line += (lineIsEmpty ? "" : " ") + item
            lineIsEmpty = false
        }
        lines.append(line)
        return lines.joined(separator: "\n")
    }

    /// `text` (its own line breaks kept) wrapped at word boundaries to `width` columns, every
    /// line starting with `indent`. A line that starts with a space is laid out already (a
    /// table) and is kept as it is.
    static func wrap(_ text: String, width: Int, indent: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { source in
            source.first == " "
                ? indent + String(source)
                : wrapItems(source.split(separator: " ").map(String.init), width: width, first: indent, indent: indent)
        }.joined(separator: "\n")
    }
}
