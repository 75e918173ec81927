import CHost
import Devices
import HostCalls
import KVM
import Sandbox
#if canImport(Glibc)
import Glibc
#endif

/// Where host console input goes, and how much it can take now.
struct ConsoleInputSink {
    let room: () -> Int
    let deliver: ([UInt8]) -> Void
}

/// The main thread while the guest runs: sleeps in poll() on the stop eventfd, the
/// SIGINT/SIGTERM signalfd and console input; moves input into the UART as its FIFO
/// (or the virtio console's buffer) drains. No busy waiting: every wait is a poll() with a
/// timeout only while input is pending. (Hangs are the `HangWatchdog`'s job.)
final class MainLoop {
    let control: MachineControl
    let signalFD: Int32
    let input: TerminalInput?
    let sink: ConsoleInputSink
    private var pending: [UInt8] = []
    private var inputOpen: Bool

    /// While input waits for FIFO room, how often to retry (ms).
    static let inputRetryMilliseconds: Int32 = 10

    init(control: MachineControl, signalFD: Int32, input: TerminalInput?, sink: ConsoleInputSink) {
        self.control = control
        self.signalFD = signalFD
        self.input = input
        self.sink = sink
        self.inputOpen = input != nil
    }

    func run() {
        while control.exitReason == nil {
            var fds = [pollfd(fd: control.wakeFD, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: signalFD, events: Int16(POLLIN), revents: 0)]
            if inputOpen, let input { fds.append(pollfd(fd: input.fd, events: Int16(POLLIN), revents: 0)) }
            let rc = retryingInterrupted { poll(&fds, nfds_t(fds.count), timeout()) }
            if rc < 0 {
                control.stop(.vmmError("poll: \(String(cString: strerror(errno)))"))
                break
            }
            // A seccomp violation (the SIGSYS handler wrote the wake eventfd) ends the machine.
            if let violation = SeccompViolation.first { control.stop(.vmmError(violation.sentence)) }
            if fds[1].revents & Int16(POLLIN) != 0 { readSignal() }
            if fds.count > 2, fds[2].revents != 0 { readInput() }
            feedInput()
        }
    }

    private func timeout() -> Int32 {
        pending.isEmpty ? -1 : Self.inputRetryMilliseconds
    }

    private func readSignal() {
        let signo = host_read_signalfd(signalFD)
        if signo > 0 { control.stop(.stopped(signal: signo)) }
    }

    private func readInput() {
        guard let input else { return }
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = retryingInterrupted { read(input.fd, &buf, buf.count) }
        if n == 0 || (n < 0 && errno != EAGAIN) {
            inputOpen = false   // EOF or error: the guest just gets no more input
            return
        }
        guard n > 0 else { return }
        switch input.filter(Array(buf[0..<n])) {
        case .bytes(let b): pending += b
        case .quit(let b):
            pending += b
            control.stop(.stopped(signal: 0))
        }
    }

    private func feedInput() {
        guard !pending.isEmpty else { return }
        let room = sink.room()
        guard room > 0 else { return }
        let chunk = Array(pending.prefix(room))
        sink.deliver(chunk)
        pending.removeFirst(chunk.count)
    }

}

func installKickHandler() -> Int32 {
    host_install_kick_handler(VCPU.kickSignal)
}
