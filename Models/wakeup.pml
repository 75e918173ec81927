/*
 * Kite's vCPU wake-up protocol, for the SPIN model checker.
 * The protocol in words, and how each step maps to Kite's code: Docs/WakeupProtocol.md.
 * Checked by scripts/check-models (part of scripts/test).
 *
 * One process per vCPU thread, and the threads that post to vCPUs: guests' IPIs (posted
 * by the sending vCPU's thread, in its exit handling), a device or timer thread, the hang
 * watchdog (snapshot requests), fault injection (stall and release) and, with STOPPER, the
 * thread that stops the machine.
 *
 * Switches (spin -D...):
 *   N=2|3            how many vCPUs
 *   STOPPER          the machine is stopped at some point: for termination and deadlock
 *   VCPUS_ONLY       only the vCPU threads post (IPIs, SIPIs): no device, watchdog or fault
 *                    injection thread, so that 3 vCPUs fit in memory
 *   TIMEOUTS         a halted vCPU's wait may end without a post (its timer ran out)
 *   FLAW_NO_RESET    libkrun's flaw (../shared/notes/userspace-irqchip.md): only a poster
 *                    marks a waiter running, so a wait that times out leaves the vCPU marked
 *                    WAITING while it runs the guest; posts then wake nobody. Must fail.
 *   FLAW_LATE_CLEAR  immediate_exit cleared after the vCPU's lock is dropped, not before
 *                    its last look at what is pending. Must fail.
 *   FLAW_STOP_NO_WAKE  stopping only sets the flag, without waking or kicking each vCPU.
 *                    Must fail (the threads must all end).
 *   FLAW_NO_WINDOW   no interrupt window is requested when an interrupt is posted while
 *                    another waits for the guest to take it. Must fail.
 *
 * A critical section (between lock(i) and unlock(i)) is one atomic step here. That is sound
 * because everything it touches is guarded by i's lock or belongs to its own thread, so other
 * threads' steps commute with it; and it keeps the state space small. A wait inside one
 * breaks it where the thread blocks, as pthread_cond_wait does.
 */
#ifndef N
#define N 2
#endif
#define MAXIPI 2          /* IPIs all guests send, at most: the model stays finite */
#define MAXTIMEOUTS 1     /* timed waits that run out, per vCPU: a timer fires a finite number
                             of times while anything else happens (and SPIN's locks are not
                             fair, so an endless HLT-timeout loop would starve a poster) */
#define RUNNING 0
#define WAITING 1

bool lk[N];        /* the vCPU's lock; a thread never holds two */
byte state[N];     /* RUNNING or WAITING (blocked in Kite): tells a poster to kick or to wake */
bool ie[N];        /* kvm_run.immediate_exit */
bool sig[N];       /* the kick signal, pending on the vCPU's thread */
bool cv[N];        /* the vCPU's condition variable was signalled since it began waiting */
bool irr[N];       /* posted, not yet injected */
bool inj[N];       /* injected with KVM_INTERRUPT, not yet taken by the guest */
bool win[N];       /* kvm_run.request_interrupt_window */
bool started[N];   /* SIPI received (vCPU 0 starts running) */
bool snap[N];      /* a snapshot request is waiting for the vCPU's thread */
bool stalled[N];   /* held out of the guest by fault injection */
bool stop;
byte ipis;
byte done;

inline lock(i)   { !lk[i] -> lk[i] = 1 }
inline unlock(i) { lk[i] = 0 }

/* With i's lock held, after recording the event: wake i if it waits in Kite, otherwise
 * kick it out of (or away from) KVM_RUN: immediate_exit first, then the signal. */
inline wake_or_kick(i) {
    if
    :: state[i] == WAITING ->
        cv[i] = 1;
#ifdef FLAW_NO_RESET
        state[i] = RUNNING
#endif
    :: else -> ie[i] = 1; sig[i] = 1
    fi
}

inline post_interrupt(t) {
    atomic {
        lock(t);
        if
        :: !irr[t] -> irr[t] = 1; wake_or_kick(t)
        :: else -> skip      /* merged with the one already posted, which woke or kicked t */
        fi;
        unlock(t)
    }
}

/* Any other event for t's thread: `what` records it (e.g. snap[t] = 1). */
#define post_event(t, what) atomic { lock(t); what; wake_or_kick(t); unlock(t) }

proctype vcpu(byte i) {
    bool halted;
    byte timeouts;
    byte why;          /* 0 kicked, 1 HLT, 2 sends an IPI to j, 3 sends a SIPI to j, 4 window open */
    byte j;
top:
    /* ---- between exits, under the vCPU's own lock ---- */
    atomic {
        lock(i);
        do
        :: stop -> unlock(i); goto finish
        :: !stop && snap[i] -> snap[i] = 0       /* read its registers, answer */
        :: !stop && !snap[i] && (stalled[i] || !started[i] || (halted && !irr[i] && !inj[i])) ->
            state[i] = WAITING; cv[i] = 0;       /* pthread_cond_wait: unlocks and blocks */
            unlock(i);
            if
            :: cv[i]
#ifdef TIMEOUTS
            :: halted && timeouts < MAXTIMEOUTS -> /* the timed wait ran out: back to the guest */
                halted = 0; timeouts++
#endif
            fi;
            lock(i);
#ifndef FLAW_NO_RESET
            state[i] = RUNNING                   /* on every return from the wait */
#endif
        :: else -> break
        od;
        halted = 0;
#ifndef FLAW_LATE_CLEAR
        ie[i] = 0;                               /* before the last look at what is pending */
#endif
        if
        :: irr[i] && !inj[i] -> irr[i] = 0; inj[i] = 1
#ifndef FLAW_NO_WINDOW
        :: irr[i] && inj[i] -> win[i] = 1
#endif
        :: else -> skip
        fi;
        unlock(i)
    }
#ifdef FLAW_LATE_CLEAR
    ie[i] = 0;
#endif
    atomic {
        /* the kick signal's handler may have run at any moment outside KVM_RUN */
        if
        :: sig[i] -> sig[i] = 0
        :: true
        fi;
        /* ---- KVM_RUN ---- */
        if
        :: ie[i] -> goto handle                  /* polled once as KVM_RUN starts: -EINTR */
        :: else
        fi
    }
    do
    :: sig[i] -> sig[i] = 0; break               /* the kick: -EINTR */
    :: !sig[i] && inj[i] ->                      /* the guest (IF=1) takes the interrupt */
        inj[i] = 0;
        if
        :: win[i] -> win[i] = 0; why = 4; break  /* KVM_EXIT_IRQ_WINDOW_OPEN */
        :: else
        fi
    :: !sig[i] && !inj[i] -> why = 1; break      /* HLT */
    :: atomic { !sig[i] && !inj[i] && ipis < MAXIPI ->
        select (j : 0 .. N - 1);
        if
        :: j != i && started[j] -> ipis++; why = 2; break
        :: else -> j = 0
        fi }
    :: atomic { !sig[i] && !inj[i] && i == 0 ->
        select (j : 1 .. N - 1);
        if
        :: !started[j] -> why = 3; break
        :: else -> j = 0
        fi }
    :: !sig[i] && !inj[i] -> skip                /* spins in the guest, e.g. waiting for an IPI's answer */
    od;
handle:
    /* ---- the exit, on the vCPU's thread, without its lock ---- */
    if
    :: why == 1 -> halted = 1
    :: why == 2 -> post_interrupt(j)
    :: why == 3 -> post_event(j, started[j] = 1)
    :: else
    fi;
    atomic { why = 0; j = 0 }                   /* (locals reset: fewer distinct states) */
    goto top;
finish:
    done++
}

/* A device or timer thread: an interrupt to a vCPU that runs. */
proctype device() {
    byte t;
    select (t : 0 .. N - 1);
    if
    :: started[t] -> post_interrupt(t)
    :: else
    fi
}

/* The hang watchdog: a snapshot request, answered on the vCPU's own thread. */
proctype watchdog() {
    byte t;
    select (t : 0 .. N - 1);
    post_event(t, snap[t] = 1)
}

/* Fault injection: hold the last vCPU out of the guest, then let it go. */
proctype injector() {
    post_event(N - 1, stalled[N - 1] = 1);
    post_event(N - 1, stalled[N - 1] = 0)
}

#ifdef STOPPER
proctype stopper() {
    byte t;
#ifndef FLAW_STOP_NO_WAKE
    for (t : 0 .. N - 1) { atomic { lock(t); stop = 1; wake_or_kick(t); unlock(t) } }
#else
    stop = 1
#endif
}
#endif

init {
    byte i;
    atomic {
        started[0] = 1;
        for (i : 0 .. N - 1) { run vcpu(i) }
#ifndef VCPUS_ONLY
        run device();
        run watchdog();
        run injector();
#endif
#ifdef STOPPER
        run stopper();
#endif
    }
}

/* Every posted interrupt is taken by its guest (unless the machine stops first). */
#if N == 2
#define ALL(p) (p(0) && p(1))
#else
#define ALL(p) (p(0) && p(1) && p(2))
#endif
/* (posted and not yet taken: in irr, or injected and not yet taken) */
#define TAKEN(k) ((irr[k] || inj[k]) -> <> ((!irr[k] && !inj[k]) || stop))
#define ANSWERED(k) (snap[k] -> <> (!snap[k] || stop))
ltl taken { [] ALL(TAKEN) }
/* Every snapshot request is answered by the vCPU's thread. */
ltl answered { [] ALL(ANSWERED) }
/* Once the machine stops, every vCPU thread ends (run with STOPPER). */
ltl ends { <> (done == N) }
