// The UDP listeners: each datagram is one message. UDP cannot push back, so while too many
// events wait for the spool a datagram is dropped and counted; datagrams the kernel dropped
// before they were read (its receive buffer full) are counted from /proc (kernel-drops.ts).
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { errorMessage } from "../../agent/errortext.ts";
import { KernelUdpDrops } from "./kernel-drops.ts";
import { bound, eventWriter, normaliseIp, type EventWriter, type ListenerContext } from "./listener.ts";
import type { Listener } from "./options.ts";
import { Throttled } from "./throttled.ts";

const UDP_RECV_BUFFER_BYTES = 8 * 1024 * 1024;
/** How often the kernel's drop counts of the UDP sockets are read (a small file each time). */
const KERNEL_DROPS_READ_MS = 2_000;

/** The input's UDP sockets. */
export class UdpListeners {
  private readonly sockets: UdpSocket[] = [];
  private readonly ports: number[] = [];
  /** Datagrams dropped because too many events waited for the spool ... */
  queueDropped = 0;
  /** ... and datagrams the kernel dropped before they could be read (its receive buffer was full). */
  kernelDropped = 0;
  /** Messages cut to max_message_bytes. */
  truncated = 0;
  // Datagrams mostly come from a few senders: their event line ends are kept, not rebuilt.
  private readonly writers = new Map<string | null, EventWriter>();
  private readonly kernelDrops = new KernelUdpDrops(() => this.ports);
  private dropsTimer: ReturnType<typeof setInterval> | null = null;
  private dropsReading: Promise<void> | null = null;
  private readonly queueDrops: Throttled;
  private readonly kernelDropsLog: Throttled;

  constructor(private readonly l: ListenerContext) {
    const { ctx } = l;
    this.queueDrops = new Throttled((n) =>
      ctx.log.warn("UDP datagrams dropped: too many events wait for the spool", { dropped: n, udp_dropped: this.dropped }));
    this.kernelDropsLog = new Throttled((n) => {
      ctx.log.warn("UDP datagrams dropped by the kernel: they arrived faster than the input read them", {
        dropped: n, udp_dropped: this.dropped,
      });
      ctx.reportError(new Error(`${this.kernelDropped} UDP datagrams dropped by the kernel (receive buffer full)`));
    });
  }

  /** Datagrams dropped, by the input and by the kernel. */
  get dropped(): number {
    return this.queueDropped + this.kernelDropped;
  }

  /** Binds a udp:// listener and returns its port; a bind error goes to `cannotListen`. */
  async listen(l: Listener, cannotListen: (err: unknown) => never): Promise<number> {
    const { ctx } = this.l;
    const udp = createSocket({ type: l.host.includes(":") ? "udp6" : "udp4", reuseAddr: false });
    this.sockets.push(udp);
    await bound(udp, (done) => udp.bind(l.port, l.host, done)).catch(cannotListen);
    // A larger kernel buffer absorbs bursts while the event loop is busy (capped by net.core.rmem_max).
    try {
      udp.setRecvBufferSize(UDP_RECV_BUFFER_BYTES);
    } catch {
      // not supported by this runtime: keep the system default
    }
    udp.on("error", (err) => ctx.reportError(err));
    udp.on("message", (msg: Uint8Array, rinfo) => {
      try {
        this.accept(msg, normaliseIp(rinfo.address));
      } catch (err) {
        ctx.reportError(err);
      }
    });
    this.ports.push(udp.address().port);
    return udp.address().port;
  }

  /** Starts reading the kernel's drop counts, if there is a UDP socket. */
  watchKernelDrops(): void {
    if (this.ports.length > 0) this.dropsTimer = setInterval(this.readKernelDrops, KERNEL_DROPS_READ_MS);
  }

  /** Closes the sockets, having read the kernel's drop counts once more. */
  async close(): Promise<void> {
    if (this.dropsTimer !== null) {
      clearInterval(this.dropsTimer);
      // The kernel's count goes with the socket: read it once more before closing.
      await this.readKernelDrops();
    }
    for (const u of this.sockets) {
      try {
        u.close();
      } catch {
        // Already closed (bind failed).
      }
    }
  }

  /** Logs the drops not reported yet (at stop). */
  reportPending(): void {
    this.queueDrops.close();
    this.kernelDropsLog.close();
  }

  private writer(ip: string | null): EventWriter {
    let w = this.writers.get(ip);
    if (!w) {
      if (this.writers.size >= 1024) this.writers.clear();
      w = eventWriter(this.l, ip, "udp");
      this.writers.set(ip, w);
    }
    return w;
  }

  private accept(msg: Uint8Array, ip: string | null): void {
    const { ctx, opts, batcher, showDetail } = this.l;
    if (batcher.full) {
      this.queueDropped++;
      if (this.queueDropped === 1 || this.queueDropped % 1000 === 0) {
        ctx.reportError(new Error(`spool full: ${this.queueDropped} UDP datagrams dropped`));
      }
      this.queueDrops.hit();
      showDetail();
      return;
    }
    let end = msg.length;
    while (end > 0 && (msg[end - 1] === 0x0a || msg[end - 1] === 0x0d || msg[end - 1] === 0x00)) end--;
    if (end === 0) return;
    if (end > opts.max_message_bytes) {
      end = opts.max_message_bytes;
      this.truncated++;
      showDetail();
    }
    const w = this.writer(ip);
    w.mc.now = Date.now();
    w.write(msg, 0, end);
    batcher.added();
  }

  private readonly readKernelDrops = (): Promise<void> =>
    (this.dropsReading ??= this.kernelDrops.read().then((n) => {
      if (n === null || n <= this.kernelDropped) return;
      const added = n - this.kernelDropped;
      this.kernelDropped = n;
      this.kernelDropsLog.hit(added);
      this.l.showDetail();
    }).catch((err) => this.l.ctx.log.debug("reading the kernel's UDP drop counts failed", { error: errorMessage(err) }))
      .finally(() => (this.dropsReading = null)));
}
