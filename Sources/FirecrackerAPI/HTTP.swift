import JSON

/// One HTTP/1.x request as the API server read it.
public struct HTTPRequest: Equatable, Sendable {
    public var method: String
    /// The path without its query string.
    public var path: String
    /// What followed `?` in the target, if anything.
    public var query: String?
    public var body: [UInt8]
    /// `Connection: close`, or HTTP/1.0 without `Connection: keep-alive`.
    public var closeAfter = false

    public init(method: String, path: String, query: String? = nil, body: [UInt8] = [], closeAfter: Bool = false) {
        self.method = method; self.path = path; self.query = query; self.body = body; self.closeAfter = closeAfter
    }
}

/// An answer in Firecracker's exact form (micro-http): no reason phrase, `Server: Firecracker
/// API`, keep-alive, and for a body `Content-Type: application/json` and its length. Go's
/// Firecracker clients decide what they got by the status and the content type.
public struct HTTPResponse: Equatable, Sendable {
    public var status: Int
    public var body: [UInt8]
    public var contentType = "application/json"

    public init(status: Int, body: [UInt8] = [], contentType: String = "application/json") {
        self.status = status; self.body = body; self.contentType = contentType
    }

    public static let noContent = HTTPResponse(status: 204)

    public static func json(_ value: JSONValue, status: Int = 200) -> HTTPResponse {
        HTTPResponse(status: status, body: Array(JSONWriter.write(value).utf8))
    }

    /// `{"fault_message": "..."}`, 400 unless told otherwise.
    public static func fault(_ message: String, status: Int = 400) -> HTTPResponse {
        json(.object([("fault_message", .string(message))]), status: status)
    }

    public var bytes: [UInt8] {
        var head = "HTTP/1.1 \(status) \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n"
        if status != 204 && status >= 200 {
            head += "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n"
        }
        head += "\r\n"
        return Array(head.utf8) + (status == 204 ? [] : body)
    }

    /// `100 Continue`, for a client that sent `Expect: 100-continue` (curl does for bodies
    /// over 1 KiB) and waits for it before the body.
    public static let continueBytes = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)
}

/// Reads HTTP/1.x requests from a byte stream, one at a time, within fixed limits: a
/// request's head is at most `maxHeadBytes`, its body at most `maxBodyBytes` (Firecracker's
/// `--http-api-max-payload-size`, 51200 by default). What it cannot read is an error that
/// ends the connection, since the stream has no request boundary after it.
public struct HTTPRequestReader: Sendable {
    public enum Event: Equatable, Sendable {
        case request(HTTPRequest)
        /// The client waits for `100 Continue` before sending the body.
        case sendContinue
        /// Answer this fault and close the connection.
        case failed(String)
    }

    public static let maxHeadBytes = 16 << 10
    public let maxBodyBytes: Int
    private var buffer: [UInt8] = []
    /// The head of the request whose body is still coming.
    private var pending: (request: HTTPRequest, length: Int)?
    /// How much of `buffer` is known to hold no head end: a head arriving a byte at a time
    /// is scanned once, not once per byte.
    private var scanned = 0

    public init(maxBodyBytes: Int = 51200) { self.maxBodyBytes = maxBodyBytes }

    /// Bytes held for a request not yet complete.
    public var bufferedBytes: Int { buffer.count }
    /// A request's head has come and its body has not.
    public var isReadingBody: Bool { pending != nil }

    public mutating func append(_ bytes: some Sequence<UInt8>) { buffer.append(contentsOf: bytes) }

    /// The next complete request (or event), or nil until more bytes come.
    public mutating func next() -> Event? {
        if pending == nil {
            guard let end = headEnd() else {
                if buffer.count > Self.maxHeadBytes { return .failed("Request head is longer than \(Self.maxHeadBytes) bytes.") }
                return nil
            }
            guard end <= Self.maxHeadBytes else { return .failed("Request head is longer than \(Self.maxHeadBytes) bytes.") }
            let head = Array(buffer[..<end])
            buffer.removeFirst(end + 4)
            scanned = 0
            switch parseHead(head) {
            case .failure(let error): return .failed(error.message)
            case .success(let (request, length, expectContinue)):
                guard length <= maxBodyBytes else {
                    return .failed("Request payload with size \(length) is larger than the limit of \(maxBodyBytes) allowed by server.")
                }
                pending = (request, length)
                if expectContinue && buffer.count < length { return .sendContinue }
            }
        }
        guard let (request, length) = pending, buffer.count >= length else { return nil }
        var complete = request
        complete.body = Array(buffer[..<length])
        buffer.removeFirst(length)
        pending = nil
        return .request(complete)
    }

    private mutating func headEnd() -> Int? {
        let from = max(0, scanned - 3)
        guard buffer.count >= 4, from <= buffer.count - 4 else { return nil }
        for i in from...(buffer.count - 4)
        where buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 {
            return i
        }
        scanned = buffer.count
        return nil
    }

    private func parseHead(_ head: [UInt8]) -> Result<(HTTPRequest, Int, Bool), HeadError> {
        guard let text = String(validating: head, as: UTF8.self) else { return .failure(HeadError("Invalid request: not UTF-8.")) }
        var lines = text.split(separator: "\r\n", omittingEmptySubsequences: false)
        let requestLine = lines.removeFirst().split(separator: " ", omittingEmptySubsequences: false)
        guard requestLine.count == 3, !requestLine[0].isEmpty, requestLine[1].hasPrefix("/") else {
            return .failure(HeadError("Invalid request line."))
        }
        let version = requestLine[2]
        guard version == "HTTP/1.1" || version == "HTTP/1.0" else {
            return .failure(HeadError("Unsupported HTTP version."))
        }
        var length = 0
        var sawLength = false
        var expectContinue = false
        var connection: String?
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { return .failure(HeadError("Invalid header.")) }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters()
            switch name {
            case "content-length":
                guard !sawLength, let n = Int(value), n >= 0 else { return .failure(HeadError("Invalid value. Key:Content-Length; Value: \(value)")) }
                length = n
                sawLength = true
            case "transfer-encoding":
                return .failure(HeadError("Invalid header. Reason: Unsupported transfer encoding: \(value)"))
            case "expect":
                expectContinue = value.lowercased() == "100-continue"
            case "connection":
                connection = value.lowercased()
            default: break
            }
        }
        var path = String(requestLine[1])
        var query: String?
        if let q = path.firstIndex(of: "?") {
            query = String(path[path.index(after: q)...])
            path = String(path[..<q])
        }
        let close = connection == "close" || (version == "HTTP/1.0" && connection != "keep-alive")
        return .success((HTTPRequest(method: String(requestLine[0]), path: path, query: query, closeAfter: close), length, expectContinue))
    }

    private struct HeadError: Error { let message: String; init(_ m: String) { message = m } }
}

private extension Substring {
    func trimmingCharacters() -> String {
        var s = self
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
