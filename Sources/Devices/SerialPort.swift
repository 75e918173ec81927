import Synchronization

/// A 16550A UART: eight registers, a receive FIFO, and an interrupt line that is high
/// while an enabled interrupt is pending (the IOAPIC pin sees the edges).
public final class SerialPort: BusDevice {
    public enum Register {
        public static let data: UInt64 = 0          // RBR (read) / THR (write); DLL with DLAB
        public static let interruptEnable: UInt64 = 1 // IER; DLM with DLAB
        public static let interruptIdentify: UInt64 = 2 // IIR (read) / FCR (write)
        public static let lineControl: UInt64 = 3
        public static let modemControl: UInt64 = 4
        public static let lineStatus: UInt64 = 5
        public static let modemStatus: UInt64 = 6
        public static let scratch: UInt64 = 7
    }
    public enum IER {
        public static let receivedData: UInt8 = 0x01
        public static let transmitterEmpty: UInt8 = 0x02
        public static let lineStatus: UInt8 = 0x04
        public static let modemStatus: UInt8 = 0x08
    }
    public enum IIR {
        public static let noInterrupt: UInt8 = 0x01
        public static let transmitterEmpty: UInt8 = 0x02
        public static let receivedData: UInt8 = 0x04
        public static let fifoEnabled: UInt8 = 0xC0
    }
    public enum LSR {
        public static let dataReady: UInt8 = 0x01
        public static let overrun: UInt8 = 0x02
        public static let thrEmpty: UInt8 = 0x20
        public static let transmitterIdle: UInt8 = 0x40
    }
    static let dlab: UInt8 = 0x80
    static let loopback: UInt8 = 0x10
    public static let fifoSize = 64

    struct State {
        var ier: UInt8 = 0
        var lcr: UInt8 = 0
        var mcr: UInt8 = 0x08     // OUT2
        var lsr: UInt8 = LSR.thrEmpty | LSR.transmitterIdle
        var msr: UInt8 = 0xB0     // DCD, DSR, CTS
        var scratch: UInt8 = 0
        var divisorLow: UInt8 = 0x0C // 9600 baud
        var divisorHigh: UInt8 = 0
        var fifoEnabled = false
        var thrEmptyPending = false
        var rx: [UInt8] = []
        var rxHead = 0
        var lineHigh = false

        var rxCount: Int { rx.count - rxHead }

        mutating func popRX() -> UInt8? {
            guard rxHead < rx.count else { return nil }
            let b = rx[rxHead]
            rxHead += 1
            if rxHead == rx.count {
                rx.removeAll(keepingCapacity: true)
                rxHead = 0
            } else if rxHead >= SerialPort.fifoSize {
                // A FIFO that never quite empties (input arriving as fast as the guest reads)
                // must not keep every byte it ever held.
                rx.removeFirst(rxHead)
                rxHead = 0
            }
            return b
        }

        /// The highest-priority pending interrupt's IIR code, or nil.
        var pending: UInt8? {
            if ier & IER.receivedData != 0 && rxCount > 0 { return IIR.receivedData }
            if ier & IER.transmitterEmpty != 0 && thrEmptyPending { return IIR.transmitterEmpty }
            return nil
        }
    }

    private let state = Mutex(State())
    private let output: @Sendable ([UInt8]) -> Void
    private let interrupt: @Sendable (Bool) -> Void

    /// `output` receives transmitted bytes; `interrupt` is called when the line changes.
    public init(output: @escaping @Sendable ([UInt8]) -> Void, interrupt: @escaping @Sendable (Bool) -> Void) {
        self.output = output
        self.interrupt = interrupt
    }

    /// Queues host input for the guest; bytes past a full FIFO set the overrun bit.
    /// Returns how many bytes were accepted.
    @discardableResult
    public func receive(_ bytes: some Sequence<UInt8>) -> Int {
        var accepted = 0
        update { s in
            for b in bytes {
                if s.rxCount >= Self.fifoSize { s.lsr |= LSR.overrun; continue }
                s.rx.append(b)
                accepted += 1
            }
            if s.rxCount > 0 { s.lsr |= LSR.dataReady }
        }
        return accepted
    }

    /// Bytes the receive FIFO's storage holds, read or not (tests: it stays bounded).
    var receiveStorage: Int { state.withLock { $0.rx.count } }

    /// Room left in the receive FIFO.
    public var receiveSpace: Int { state.withLock { Self.fifoSize - $0.rxCount } }

    public func read(offset: UInt64, width: Int) -> UInt64 {
        var value: UInt8 = 0
        update { s in
            let dlab = s.lcr & Self.dlab != 0
            switch offset {
            case Register.data:
                if dlab { value = s.divisorLow; return }
                value = s.popRX() ?? 0
                if s.rxCount == 0 { s.lsr &= ~LSR.dataReady }
            case Register.interruptEnable:
                value = dlab ? s.divisorHigh : s.ier
            case Register.interruptIdentify:
                let p = s.pending
                value = (p ?? IIR.noInterrupt) | (s.fifoEnabled ? IIR.fifoEnabled : 0)
                // Reading IIR while it reports THR-empty clears that interrupt.
                if p == IIR.transmitterEmpty { s.thrEmptyPending = false }
            case Register.lineControl: value = s.lcr
            case Register.modemControl: value = s.mcr
            case Register.lineStatus:
                value = s.lsr
                s.lsr &= ~LSR.overrun
            case Register.modemStatus:
                if s.mcr & Self.loopback != 0 {
                    // Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
                    let m = s.mcr
                    value = ((m & 0x01) << 5) | ((m & 0x02) << 3) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
                } else {
                    value = s.msr
                }
            case Register.scratch: value = s.scratch
            default: value = 0xFF
            }
        }
        return UInt64(value)
    }

    public func write(offset: UInt64, width: Int, value: UInt64) {
        let v = UInt8(truncatingIfNeeded: value)
        var transmit: UInt8?
        update { s in
            let dlab = s.lcr & Self.dlab != 0
            switch offset {
            case Register.data:
                if dlab { s.divisorLow = v; return }
                if s.mcr & Self.loopback != 0 {
                    if s.rxCount < Self.fifoSize { s.rx.append(v); s.lsr |= LSR.dataReady } else { s.lsr |= LSR.overrun }
                } else {
                    transmit = v
                }
                // The byte leaves at once: THR is empty again and may interrupt.
                s.thrEmptyPending = true
            case Register.interruptEnable:
                if dlab { s.divisorHigh = v; return }
                let enablingTHRE = v & IER.transmitterEmpty != 0 && s.ier & IER.transmitterEmpty == 0
                s.ier = v & 0x0F
                if enablingTHRE { s.thrEmptyPending = true } // THR is always empty here
            case Register.interruptIdentify:
                s.fifoEnabled = v & 0x01 != 0
                if v & 0x02 != 0 { s.rx.removeAll(); s.rxHead = 0; s.lsr &= ~LSR.dataReady }
            case Register.lineControl: s.lcr = v
            case Register.modemControl: s.mcr = v & 0x1F
            case Register.lineStatus, Register.modemStatus: break // read-only
            case Register.scratch: s.scratch = v
            default: break
            }
        }
        if let transmit { output([transmit]) }
    }

    /// Applies `change` under the lock and raises or lowers the line if the pending state moved.
    private func update(_ change: (inout State) -> Void) {
        let edge: Bool? = state.withLock { s in
            change(&s)
            let high = s.pending != nil && s.mcr & 0x08 != 0 // OUT2 gates the IRQ on PCs
            if high == s.lineHigh { return nil }
            s.lineHigh = high
            return high
        }
        if let edge { interrupt(edge) }
    }
}
