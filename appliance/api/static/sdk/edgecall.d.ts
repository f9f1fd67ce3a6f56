// Types of Edgecall's JavaScript client, /sdk/edgecall.js (hand-written; tests/unit/test_sdk_types.py
// checks that they name everything the module exports).
//
// The client speaks the Calls HTTP API (Cloudflare's Realtime SFU API), so the same code runs against an
// Edgecall box ("http://box:8080/v1/apps/<appId>") or Cloudflare ("https://rtc.live.cloudflare.com/v1/apps/<appId>").
//
//   import { Edgecall } from "/sdk/edgecall.js";
//   const call = new Edgecall({ base, token });
//   call.addEventListener("track", (e) => attach(e.detail.track));
//   await call.connect();
//   const cam = await call.push(cameraTrack, { name: "cam" });
//   announce(call.sessionId, ["cam"]);                       // the app's own signalling
//   const remote = await call.pull({ sessionId: other, trackName: "cam" });

export interface EdgecallOptions {
  /** The app's API base, ".../v1/apps/<appId>". */
  base: string;
  /** The bearer token: an app secret (servers only) or a short-lived token (a box's room token). A
   * function is asked before every request, so a token can be renewed during a long call. */
  token: string | (() => string | Promise<string>);
  /** ICE servers for the PeerConnection (TURN credentials from the TURN API, for instance). */
  iceServers?: RTCIceServer[];
}

/**
 * - "new": made, connect() not called yet.
 * - "connecting": connect() is creating the session.
 * - "connected": the session exists and its PeerConnection is not failing (media flows once something
 *   was pushed or pulled and ICE completed).
 * - "reconnecting": the PeerConnection failed (or stayed disconnected for 5 s); a new session is being made.
 * - "failed": connect() failed, or every reconnection attempt did (five, with backoff). Make a new Edgecall.
 * - "closed": close() was called.
 */
export type EdgecallState = "new" | "connecting" | "connected" | "reconnecting" | "failed" | "closed";

export interface PushOptions {
  /** The track's name in the session (default: the track's kind). Unique per session. */
  name?: string;
  /** Simulcast layers as RTCRtpEncodingParameters with `rid`, e.g.
   * [{rid: "f"}, {rid: "h", scaleResolutionDownBy: 2}, {rid: "q", scaleResolutionDownBy: 4}].
   * Browsers send three layers only from 1280x720 captures. */
  simulcast?: RTCRtpEncodingParameters[] | null;
}

export interface PullItem {
  /** The publisher's session. */
  sessionId: string;
  trackName: string;
  /** The simulcast layer wanted (the publisher's rid). */
  preferredRid?: string | null;
}

export interface PullOptions {
  preferredRid?: string | null;
}

/** Reliability of a data channel, as RTCDataChannelInit and the API's datachannels/new take it. */
export interface DataChannelOptions {
  ordered?: boolean;
  maxRetransmits?: number;
  maxPacketLifeTime?: number;
}

/** A track this client publishes. After a reconnection `mid` and `sessionId` are the new session's. */
export interface LocalTrack {
  readonly name: string;
  readonly kind: string;
  readonly mid: string | null;
  readonly sessionId: string | null;
  /** The MediaStreamTrack being sent (the last one given to replace()). */
  readonly track: MediaStreamTrack;
  readonly muted: boolean;
  /** Send another track of the same kind (camera to screen share) with no renegotiation:
   * subscribers keep their pull. The client does not stop the track it replaces. */
  replace(track: MediaStreamTrack): Promise<void>;
  /** Muted, the track sends black frames or silence (track.enabled = false), so the SFU keeps it:
   * a track that sends nothing for 30 s is ended. */
  mute(muted?: boolean): Promise<void>;
  /** Unpublish (tracks/close): subscribers' copies end. The MediaStreamTrack is not stopped. */
  close(): Promise<void>;
}

/** A track this client pulls. */
export interface RemoteTrack {
  readonly sessionId: string;
  readonly trackName: string;
  /** This session's mid for it; the key of stats().inbound. */
  readonly mid: string | null;
  readonly kind: string | null;
  /** The received track. A reconnection pulls it again into a new PeerConnection: `track` is then a
   * new MediaStreamTrack and "track" fires again with this same RemoteTrack. */
  readonly track: MediaStreamTrack | null;
  readonly preferredRid: string | null;
  /** True once closed or ended ("trackended"). */
  readonly ended: boolean;
  /** Ask for another simulcast layer (tracks/update with simulcast.preferredRid). */
  setLayer(rid: string): Promise<void>;
  /** Stop pulling (a negotiated tracks/close); the MediaStreamTrack ends. Closing twice is harmless. */
  close(): Promise<void>;
}

export interface StatechangeDetail {
  state: EdgecallState;
}

export interface ReconnectedDetail {
  /** The new session. The SFU knows tracks by (sessionId, trackName): the app must announce the new
   * session id to everyone who pulls from it (they pull again from it); old ids no longer work. */
  sessionId: string;
  previousSessionId: string | null;
}

/** A data channel opened again: the new RTCDataChannel, and the one it replaces (closed by the client).
 * Use `channel` from now on: messages sent on `previous` after its association was lost are gone.
 *
 * - After a reconnection (moved: false), every channel is opened again on the new session
 *   (RTCDataChannels do not survive their PeerConnection).
 * - When the media session lost its SCTP association but not its media (moved: true): in a cluster,
 *   a box that carries on a failed box's PeerConnection has its SRTP keys but not its DTLS and SCTP
 *   state. The client notices within about 4 s (GET session every 3 s while channels are open says
 *   they are "inactive" while the browser has them open; at once when the browser closes them) and
 *   opens them again on a new data-only session: a second RTCPeerConnection with only an
 *   m=application. The media PeerConnection sees no offer, no answer and no ICE restart. */
export interface DataChannelDetail {
  channel: RTCDataChannel;
  name: string;
  location: "local" | "remote";
  /** The publisher's session: for a remote channel the one it is subscribed from; for a local channel
   * the one it is published under now (call.dataSessionId). A local channel that moved is published
   * under a new session: subscribers must subscribe again to (sessionId, name), so announce it. */
  sessionId: string | null;
  previous: RTCDataChannel | null;
  /** True when the channel moved to a data-only session (media untouched); false after a reconnection. */
  moved: boolean;
}

export interface ConnectionStats {
  /** The PeerConnection's connectionState (or the call's state while it has none). */
  state: RTCPeerConnectionState | EdgecallState;
  /** Seconds, from the selected ICE candidate pair. */
  rtt: number | null;
}

export interface LayerStats {
  bitrate: number | null;
  frameWidth: number | null;
  frameHeight: number | null;
  framesPerSecond: number | null;
}

export interface OutboundStats {
  kind: string;
  mid: string | null;
  muted: boolean;
  /** Bits per second since the previous stats() call; null on the first. */
  bitrate: number | null;
  bytesSent: number;
  packetsSent: number;
  /** Of the widest layer being sent. */
  frameWidth: number | null;
  frameHeight: number | null;
  framesPerSecond: number | null;
  /** As the SFU reports them (RTCP receiver reports). */
  packetsLost: number | null;
  rtt: number | null;
  /** Per simulcast rid, when pushed with layers. */
  layers?: Record<string, LayerStats>;
}

export interface InboundStats {
  sessionId: string;
  trackName: string;
  kind: string | null;
  /** Bits per second since the previous stats() call; null on the first. */
  bitrate: number | null;
  bytesReceived: number;
  packetsReceived: number;
  packetsLost: number;
  jitter: number | null;
  /** Seconds: the RTCP round trip where there is one, else the connection's. */
  rtt: number | null;
  frameWidth: number | null;
  frameHeight: number | null;
  framesDecoded: number | null;
  framesPerSecond: number | null;
}

export interface EdgecallStats {
  connection: ConnectionStats;
  /** By LocalTrack name. */
  outbound: Record<string, OutboundStats>;
  /** By RemoteTrack mid. */
  inbound: Record<string, InboundStats>;
}

export interface EdgecallEventMap {
  /** A track was pulled (or pulled again after a reconnection). */
  track: CustomEvent<RemoteTrack>;
  /** A pulled track ended: its publisher closed it or left, or it could not be pulled again after a
   * reconnection (its publisher's session is gone). Not fired for the app's own close(). */
  trackended: CustomEvent<RemoteTrack>;
  statechange: CustomEvent<StatechangeDetail>;
  /** A new session replaced the failed one; local tracks are pushed again under the same names and
   * pulled tracks pulled again. Announce `detail.sessionId` to the others. */
  reconnected: CustomEvent<ReconnectedDetail>;
  /** A data channel opened again, after a reconnection or (moved) on a data-only session. */
  datachannel: CustomEvent<DataChannelDetail>;
}

/**
 * One Calls session and its RTCPeerConnection. Operations are queued: push, pull, close and data
 * channels never overlap, and the SFU's offers are answered before the next change.
 */
export declare class Edgecall extends EventTarget {
  constructor(options: EdgecallOptions);
  readonly state: EdgecallState;
  /** The current session (a new one after each reconnection); null before connect(). */
  readonly sessionId: string | null;
  /** The current RTCPeerConnection (a new one after each reconnection), for inspection. */
  readonly pc: RTCPeerConnection | null;
  /** The session the data channels ride on and local channels are published under: sessionId, or the
   * data-only session they moved to ("datachannel" with moved) when the media session lost its SCTP
   * association. Announce it to those who subscribe to this call's channels. */
  readonly dataSessionId: string | null;
  /** sessions/new, and a PeerConnection with bundlePolicy "max-bundle". */
  connect(): Promise<void>;
  /** Publish a track (tracks/new, location "local"). Resolves once negotiated and sending its first
   * packets (at most 10 s wait), so that others can pull it at once. Pushes of one tick share one
   * renegotiation. Rejects with an EdgecallError (errorCode) when the SFU refuses the track. */
  push(track: MediaStreamTrack, options?: PushOptions): Promise<LocalTrack>;
  /** Pull another session's track; rejects with an EdgecallError (e.g. not_found_track_error). */
  pull(item: PullItem, options?: PullOptions): Promise<RemoteTrack>;
  /** Pull several tracks in one renegotiation, all or nothing: when one fails, the others are closed
   * again and the promise rejects with the first failure (`failures` has one entry per item). */
  pullMany(items: PullItem[]): Promise<RemoteTrack[]>;
  /** Publish a data channel (datachannels/new, location "local"): a negotiated RTCDataChannel on the
   * SFU's id. The first channel negotiates the session's m=application. channel.close() ends it for
   * good (the SFU is told; it is not reopened after a reconnection). Published under dataSessionId. */
  publishData(name: string, options?: DataChannelOptions): Promise<RTCDataChannel>;
  /** Receive the data channel `name` that session `sessionId` publishes (location "remote"). */
  subscribeData(sessionId: string, name: string, options?: DataChannelOptions): Promise<RTCDataChannel>;
  stats(): Promise<EdgecallStats>;
  /** Leave: a forced close of every track (subscribers learn at once), then the PeerConnection closes.
   * The app's MediaStreamTracks are not stopped. */
  close(): Promise<void>;

  addEventListener<K extends keyof EdgecallEventMap>(type: K, listener: (event: EdgecallEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof EdgecallEventMap>(type: K, listener: (event: EdgecallEventMap[K]) => void,
    options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions): void;
}

/** An API error (its errorCode, as the Calls API names them, e.g. not_found_track_error,
 * session_error), or one of this client: network_error, negotiation_error (the browser refused a
 * description), closed, not_connected, invalid_state, connect_timeout, connect_failed. */
export declare class EdgecallError extends Error {
  constructor(errorCode: string, message?: string, options?: { status?: number; failures?: (EdgecallError | null)[] });
  name: "EdgecallError";
  readonly errorCode: string;
  /** The HTTP status, 0 when there was no response. */
  readonly status: number;
  /** pullMany: per item, its error or null. */
  readonly failures: (EdgecallError | null)[];
}

/** The client's operation queue (exported for its tests and for apps that serialize their own steps):
 * tasks run one at a time, in order. */
export declare class OperationQueue {
  run<T>(task: () => T | Promise<T>): Promise<T>;
  /** Runs ahead of every task still waiting (never of the running one). */
  first<T>(task: () => T | Promise<T>): Promise<T>;
  /** `item` joins the batch `key` while that batch is the last task waiting; `task(items)` runs once for
   * all of them and resolves to one result per item (an Error rejects that item's promise). */
  batch<I, R>(key: string, item: I, task: (items: I[]) => Promise<(R | Error)[]>): Promise<R>;
}
