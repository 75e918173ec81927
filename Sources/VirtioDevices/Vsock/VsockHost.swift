/// The host side of a virtio-vsock device: where guest-initiated connections go. Kite's
/// implementation (in the VMM) follows Firecracker: a guest connecting to host port P is
/// connected to the Unix socket `<path>_P`.
///
/// Every method is called by the device with its internal lock held: implementations must
/// not call back into the device from them, and must not block.
public protocol VsockHost: AnyObject {
    /// The guest asked to connect to `hostPort`: a connected, non-blocking stream, or nil to
    /// refuse (the guest then sees ECONNRESET).
    func connect(hostPort: UInt32) -> (any VsockHostStream)?
}

/// One host-side byte stream (a connected Unix socket) bound to a guest connection. The
/// device is its only user until it calls `close()`; identity (`===`) names the connection
/// in the device's `host…(_ stream:)` methods.
///
/// Readiness contract: the host watches the stream for readability only while the last
/// `setReadInterest` said true (initially false), and for writability only while the last
/// `setWriteInterest` said true (initially false); when it fires it calls
/// `VsockDevice.hostReadable` / `hostWritable`. Hang-ups and errors need no special path:
/// `read` returns nil and `write` returns nil, or the host may call `VsockDevice.hostClosed`.
public protocol VsockHostStream: AnyObject {
    /// Writes a prefix of `bytes`; returns how many bytes were taken (0 when the socket
    /// buffer is full: EAGAIN), or nil when the stream is broken (EPIPE, ECONNRESET, ...).
    func write(_ bytes: ArraySlice<UInt8>) -> Int?
    /// Reads at most `max` (> 0) bytes: [] when nothing is pending now (EAGAIN), nil at end
    /// of stream or on error.
    func read(max: Int) -> [UInt8]?
    /// The guest will send nothing more (shutdown(SHUT_WR) on the socket); everything the
    /// device wrote before has been taken.
    func shutdownWrite()
    /// Whether the host should watch the stream for readability (see the type comment).
    func setReadInterest(_ enabled: Bool)
    /// Whether the host should watch the stream for writability.
    func setWriteInterest(_ enabled: Bool)
    /// A host-initiated connection (`VsockDevice.hostConnected`) was accepted by the guest;
    /// Firecracker's protocol answers the host peer `OK <localPort>\n` now, before any data
    /// the device writes.
    func accepted(localPort: UInt32)
    /// The connection is over (reset, closed by either side, refused, device reset): close
    /// the socket and stop watching it. Called exactly once; the device forgets the stream.
    func close()
}
