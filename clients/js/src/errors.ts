// Typed errors, one per wire error code (docs/protocol.md, "Errors").

export class WeftError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** Could not connect, or the connection is unusable. */
export class ConnectionError extends WeftError {}
/** The connection dropped while the request was on the wire; it is not resent. */
export class ConnectionLost extends ConnectionError {}
/** No answer within the call's timeout. */
export class TimeoutError extends WeftError {}
/** The peer broke the protocol. */
export class ProtocolError extends WeftError {}
/** The transport cannot carry this call (e.g. `weft.ping` over the HTTP gateway). */
export class NotSupported extends WeftError {}

export interface ErrorDto {
  code: string;
  message: string;
  details?: unknown;
}

/** The server answered with an error frame (or an HTTP error body). */
export class ServerError extends WeftError {
  static readonly code: string = "unknown";
  readonly code: string;
  readonly details: unknown;
  readonly route: string;
  readonly serverMessage: string;
  constructor(message: string, details?: unknown, code?: string, route = "") {
    super(`${code ?? (new.target as typeof ServerError).code}: ${message}`);
    this.code = code ?? (new.target as typeof ServerError).code;
    this.serverMessage = message;
    this.details = details;
    this.route = route;
  }
  /** `details.kind` when present: the log's exact condition. */
  get kind(): string | undefined {
    const d = this.details as { kind?: unknown } | undefined;
    return d && typeof d.kind === "string" ? d.kind : undefined;
  }
}

export class UnknownRouteError extends ServerError { static override readonly code = "unknown_route"; }
export class BadBodyError extends ServerError { static override readonly code = "bad_body"; }
export class ValidationError extends ServerError { static override readonly code = "validation"; }
export class BusyError extends ServerError { static override readonly code = "busy"; }
export class HandlerError extends ServerError { static override readonly code = "handler"; }
export class BadFrameError extends ServerError { static override readonly code = "bad_frame"; }
export class TooLargeError extends ServerError { static override readonly code = "too_large"; }
export class UnsupportedVersionError extends ServerError { static override readonly code = "unsupported_version"; }
export class HandshakeRequiredError extends ServerError { static override readonly code = "handshake_required"; }
export class UnauthorizedError extends ServerError { static override readonly code: string = "unauthorized"; }
/** Auth is on and the caller has no valid identity (no token, or a wrong, expired or revoked one). */
export class UnauthenticatedError extends UnauthorizedError { static override readonly code = "unauthenticated"; }
/** The caller's roles do not allow this request. */
export class ForbiddenError extends UnauthorizedError { static override readonly code = "forbidden"; }
export class NotFoundError extends ServerError { static override readonly code = "not_found"; }
export class ConflictError extends ServerError { static override readonly code = "conflict"; }
export class OutOfRangeError extends ServerError { static override readonly code = "out_of_range"; }
export class UnavailableError extends ServerError { static override readonly code = "unavailable"; }
/** Cluster mode: the node does not lead the raft group and did not run the request; details: {group, leader, addr}. */
export class NotLeaderError extends ServerError { static override readonly code = "not_leader"; }
export class ServerTimeoutError extends ServerError { static override readonly code = "timeout"; }
export class ShuttingDownError extends ServerError { static override readonly code = "shutting_down"; }
export class InternalError extends ServerError { static override readonly code = "internal"; }

const BY_CODE: Record<string, typeof ServerError> = {};
for (const c of [
  UnknownRouteError, BadBodyError, ValidationError, BusyError, HandlerError, BadFrameError, TooLargeError,
  UnsupportedVersionError, HandshakeRequiredError, UnauthorizedError, UnauthenticatedError, ForbiddenError, NotFoundError, ConflictError,
  OutOfRangeError, UnavailableError, NotLeaderError, ServerTimeoutError, ShuttingDownError, InternalError,
]) BY_CODE[c.code] = c;

/** The typed error for an error body; unknown codes (a newer server) give a plain ServerError. */
export function fromDto(dto: unknown, route = ""): ServerError {
  if (!dto || typeof dto !== "object") return new ServerError(`malformed error body ${JSON.stringify(dto)}`, undefined, "unknown", route);
  const d = dto as Partial<ErrorDto>;
  const code = String(d.code ?? "unknown");
  const cls = BY_CODE[code];
  const msg = String(d.message ?? "");
  return cls ? new cls(msg, d.details, undefined, route) : new ServerError(msg, d.details, code, route);
}
