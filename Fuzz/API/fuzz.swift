// libFuzzer target for what Kite reads from Firecracker API clients (`kite firecracker`):
// the HTTP/1.x framing of Sources/FirecrackerAPI/HTTP.swift, and the bodies and routes of
// APIRequest.swift, BodyDecoder.swift and Schema.swift over Sources/JSON's reader. Built and
// run by Fuzz/run-api-fuzz.sh.
//
// Input: u8 chunk size (1-256), u8 body limit (mod 4: 0, 16, 1024 or 51200 bytes), then the
// byte stream a client sends, fed to the reader in chunks of that size.
//
// Checked, beyond "no trap, no ASan report": the reader never holds more than a head
// (16 KiB) plus a body limit plus one chunk; a request it returns has a body no longer than
// the limit and a path that starts with "/"; after `failed` nothing more is read (the server
// closes); routing a request either throws or gives a request; and JSON the reader accepts
// (the whole input, read as one document) is written back as text that reads the same.
import FirecrackerAPI
import JSON

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let value = try? JSONReader.read(bytes) {
        let text = JSONWriter.write(value)
        guard let again = try? JSONReader.read(text), JSONWriter.write(again) == text else {
            fatalError("JSON written back does not read the same: \(text)")
        }
    }
    guard bytes.count >= 2 else { return 0 }
    let chunk = Int(bytes[0]) + 1
    let limit = [0, 16, 1024, 51200][Int(bytes[1]) % 4]
    var reader = HTTPRequestReader(maxBodyBytes: limit)
    var at = 2
    while at < bytes.count {
        let end = min(bytes.count, at + chunk)
        reader.append(bytes[at..<end])
        at = end
        precondition(reader.bufferedBytes <= HTTPRequestReader.maxHeadBytes + 4 + limit + chunk, "the reader holds too much")
        while let event = reader.next() {
            switch event {
            case .failed: return 0   // the server answers 400 and closes
            case .sendContinue: continue
            case .request(let request):
                precondition(request.body.count <= limit && request.path.hasPrefix("/"))
                _ = try? APIRequest.parse(request)
            }
        }
        precondition(reader.next() == nil, "asked again with nothing new, the reader found something")
    }
    return 0
}
