/**
 * Waiting on several libnbd handles and a {@link Doorbell} at once: what `nbd_poll` does for
 * one handle, done with `poll(2)` over all of them (`nbd_aio_get_fd`,
 * `nbd_aio_get_direction`, `nbd_aio_notify_read/write`).
 *
 * @module
 */

import { errno, libc, OsCallError, POLL } from "../../ffi/libc.ts";
import { LIBNBD_AIO_DIRECTION, NbdError } from "../../ffi/libnbd.ts";
import type { NbdHandle } from "../../ffi/nbd_handle.ts";
import type { Doorbell } from "./copy_shared.ts";

const EINTR = 4;

/** A handle's failure while polling, with its index in the list. */
export class HandlePollError extends Error {
  /** Which handle failed. */
  readonly index: number;
  constructor(index: number, cause: unknown) {
    super(cause instanceof Error ? cause.message : String(cause), { cause });
    this.name = "HandlePollError";
    this.index = index;
  }
}

/**
 * Blocks until one of `handles` can make progress, `bell` rings, or `timeout` ms pass (-1:
 * no limit), then lets libnbd do the reading or writing. Handles with nothing in flight
 * are not polled. A handle whose server went away throws {@link HandlePollError}.
 *
 * @example
 * ```ts ignore
 * import { pollHandles } from "./poll.ts";
 * pollHandles([h], bell, -1);
 * ```
 */
export function pollHandles(handles: NbdHandle[], bell: Doorbell | undefined, timeout: number) {
  const n = handles.length + (bell ? 1 : 0);
  const fds = new Uint8Array(8 * n);
  const view = new DataView(fds.buffer);
  const used: number[] = [];
  handles.forEach((h, i) => {
    let fd = -1;
    let events = 0;
    if (h.aioInFlight() > 0) {
      const dir = h.aioGetDirection();
      if (dir & LIBNBD_AIO_DIRECTION.READ) events |= POLL.IN;
      if (dir & LIBNBD_AIO_DIRECTION.WRITE) events |= POLL.OUT;
      if (events) fd = h.aioGetFd();
      // Commands in flight but nothing to wait for (a handle changing state): look again
      // soon rather than sleep until the doorbell rings.
      else if (timeout < 0 || timeout > 10) timeout = 10;
    }
    view.setInt32(8 * i, fd, true);
    view.setInt16(8 * i + 4, events, true);
    used.push(fd);
  });
  if (bell) {
    view.setInt32(8 * handles.length, bell.fd, true);
    view.setInt16(8 * handles.length + 4, POLL.IN, true);
  }
  const r = libc().poll(fds, BigInt(n), timeout);
  if (r < 0) {
    const code = errno();
    if (code === EINTR) return;
    throw new OsCallError("poll", code);
  }
  if (r === 0) return;
  handles.forEach((h, i) => {
    if (used[i] < 0) return;
    const revents = view.getInt16(8 * i + 6, true);
    try {
      // Prefer reading: the reply is already waiting. One notification per poll, as nbd_poll.
      if (revents & (POLL.IN | POLL.HUP)) h.aioNotifyRead();
      else if (revents & POLL.OUT) h.aioNotifyWrite();
      else if (revents & (POLL.ERR | POLL.NVAL)) {
        throw new NbdError("poll", "server closed the connection unexpectedly", 107);
      }
    } catch (err) {
      throw new HandlePollError(i, err);
    }
  });
  if (bell && (view.getInt16(8 * handles.length + 6, true) & POLL.IN)) bell.drain();
}
