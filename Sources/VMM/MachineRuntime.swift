import Devices
import Sandbox
import HostCalls
import Synchronization
import Virtio
import VirtioDevices

/// What other threads may do to a running machine (Firecracker's API thread): pause and
/// resume its vCPUs, press Ctrl+Alt+Delete, give a disk a new backing file. Each call
/// blocks until it is done and says why not if it could not be.
public final class MachineRuntime: @unchecked Sendable {
    // @unchecked: every member is itself safe to use from any thread (VCPUThread by its
    // wake-up protocol, I8042 and the transports by their own locks); the arrays never change.
    let threads: [VCPUThread]
    let control: MachineControl
    let i8042: I8042
    let disks: [(device: BlockDevice, transport: VirtioMMIOTransport)]
    let networks: [NetworkDevice]
    /// Serializes pause and resume (two API clients cannot interleave them).
    private let pauseLock = Mutex(())

    init(threads: [VCPUThread], control: MachineControl, i8042: I8042,
         disks: [(device: BlockDevice, transport: VirtioMMIOTransport)], networks: [NetworkDevice]) {
        self.threads = threads; self.control = control; self.i8042 = i8042; self.disks = disks
        self.networks = networks
    }

    /// The devices' counters since the machine started, summed by kind and named as
    /// Firecracker's metrics name them.
    public func metrics() -> [(group: String, counters: [(name: String, value: Int)])] {
        let block = disks.map { $0.device.counters }
        let net = networks.map(\.counters)
        return [
            ("block", [("read_count", block.reduce(0) { $0 + $1.reads }), ("read_bytes", block.reduce(0) { $0 + $1.readBytes }),
                       ("write_count", block.reduce(0) { $0 + $1.writes }), ("write_bytes", block.reduce(0) { $0 + $1.writeBytes }),
                       ("flush_count", block.reduce(0) { $0 + $1.flushes })]),
            ("net", [("rx_packets_count", net.reduce(0) { $0 + $1.framesReceived }), ("rx_bytes_count", net.reduce(0) { $0 + $1.bytesReceived }),
                     ("rx_fails", net.reduce(0) { $0 + $1.receiveDropped }),
                     ("tx_packets_count", net.reduce(0) { $0 + $1.framesSent }), ("tx_bytes_count", net.reduce(0) { $0 + $1.bytesSent }),
                     ("tx_fails", net.reduce(0) { $0 + $1.transmitDropped })]),
            ("seccomp", [("num_faults", SeccompViolation.first?.count ?? 0)]),
        ]
    }

    /// How long every vCPU together gets to leave the guest when paused.
    public static let pauseSeconds: UInt64 = 5

    /// Holds every vCPU out of the guest; returns once all are out. Interrupts that arrive
    /// meanwhile wait where they were posted and are taken after `resume`.
    public func pause() -> String? {
        pauseLock.withLock { _ in
            guard !control.isStopping else { return "the machine is stopping" }
            let deadline = monotonicNanoseconds() + Self.pauseSeconds * 1_000_000_000
            let late = threads.filter { !$0.pause(untilNanoseconds: deadline) }
            guard late.isEmpty else {
                for t in threads { t.resume() }
                return "vCPU \(late.map { String($0.vcpu.id) }.joined(separator: ", ")) did not leave the guest within "
                    + "\(Self.pauseSeconds) s; the machine was not paused"
            }
            return nil
        }
    }

    public func resume() -> String? {
        pauseLock.withLock { _ in
            for t in threads { t.resume() }
            return nil
        }
    }

    /// Puts Ctrl+Alt+Delete in the keyboard's buffer and raises its interrupt.
    public func pressCtrlAltDel() -> String? {
        guard i8042.hasKeyboard else { return "this machine has no keyboard" }
        guard i8042.pressCtrlAltDelete() else { return "i8042 internal buffer full." }
        return nil
    }

    /// Gives disk `index` (the guest's order) the file at `path`, opened and locked here;
    /// the old file is flushed and closed, and the guest is told the disk changed (its
    /// driver reads the new capacity).
    public func replaceDisk(_ index: Int, path: String) -> String? {
        guard disks.indices.contains(index) else { return "there is no disk \(index)" }
        let (device, transport) = disks[index]
        let backend: FileBlockBackend
        do { backend = try FileBlockBackend(path: path, readOnly: device.isReadOnly) } catch {
            return "Unable to patch the block device: \(error)"
        }
        var failure: String?
        transport.changeDevice { _ in
            if let error = device.replaceBackend(backend) {
                failure = "Unable to patch the block device: flushing the old file failed: \(error)"
                return false
            }
            return true
        }
        return failure
    }
}

extension Machine {
    /// The handle for other threads to act on the running machine.
    public var runtime: MachineRuntime {
        MachineRuntime(threads: threads, control: control, i8042: i8042, disks: disks, networks: networks)
    }
}
