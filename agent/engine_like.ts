/**
 * What a capture session needs of a capture engine (structural, so tests can inject fakes; the
 * real one is agent/capture_engine.ts).
 */
export interface EngineLike {
  readonly linkType: number;
  readonly snaplen: number;
  next(): Promise<{ count: number; records: Uint8Array } | null>;
  stats(): {
    received: number;
    dropped: number;
    ifDropped: number;
    engineDropped: number;
    packets: number;
    bytes: number;
  };
  stop(): Promise<void>;
  close(): void;
  /** Resolves once the engine has released its handle and thread (optional for fakes). */
  readonly finished?: Promise<void>;
}

export interface EngineOpenOptions {
  device: string;
  netns?: string;
  snaplen: number;
  promiscuous?: boolean;
  filter?: string;
  bufferSize?: number;
  timeoutMs?: number;
  immediate?: boolean;
}
export type OpenEngine = (opts: EngineOpenOptions) => Promise<EngineLike>;
