// bzip2 decompression in plain TypeScript, so feeds such as the PhishTank dump (.json.bz2)
// decode under Bun and Deno without a native module.
//
// Format (bzip2 1.0.x, also written by pbzip2 and lbzip2, whose output is several streams
// back to back): a stream is "BZh" + level digit '1'..'9' (block size = level * 100k), then
// blocks, then the end-of-stream marker. A block is: 48-bit magic 0x314159265359, the CRC of
// its decoded bytes, a "randomised" bit, the 24-bit BWT origin pointer, the bitmap of byte
// values used, 2..6 Huffman tables chosen per group of 50 symbols by MTF-coded selectors, and
// the Huffman-coded symbols of the MTF + zero-run (RUNA/RUNB) stage. Decoding runs the stages
// backwards: Huffman -> MTF/runs -> inverse BWT -> RLE1 (4 equal bytes + a repeat count).
// The end-of-stream marker is the 48-bit magic 0x177245385090 and the combined CRC of the
// stream's blocks, then padding to a byte boundary. Blocks are bit-aligned, not byte-aligned.
//
// The decoder is push-based so the same code serves a whole buffer and a stream fed in
// chunks of any size: the Huffman symbol loop suspends between groups of 50 symbols when less
// than a group's worth of input is buffered, and the (small) block header is re-parsed from
// its start when it was cut short. Memory is about 6 bytes per byte of the largest block seen
// (at most 100k * level) plus the unconsumed input; decoded bytes leave in chunks.
import { concat } from "../../agent/bytes.ts";

export class Bzip2Error extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Bzip2Error";
  }
}

const BLOCK_MAGIC_HI = 0x314159;
const BLOCK_MAGIC_LO = 0x265359;
const EOS_MAGIC_HI = 0x177245;
const EOS_MAGIC_LO = 0x385090;

const MAX_TABLES = 6;
const MAX_ALPHA = 258; // 256 MTF values + RUNA/RUNB - 1 + end-of-block
const MAX_CODE_LEN = 20;
const LEN_SLOTS = MAX_CODE_LEN + 1;
// bzip2 1.0.8 reads up to 32767 selectors but uses only the first 18002 (900k / 50 + 2);
// lbzip2 writes a few more than needed, so extra ones are read and ignored, not rejected.
const MAX_SELECTORS = 18002;
const GROUP_SIZE = 50;
// One group of 50 symbols of at most 20 bits plus the 3-byte look-ahead of the bit refill.
const GROUP_BYTES = Math.ceil((GROUP_SIZE * MAX_CODE_LEN) / 8) + 4;
// Codes up to LUT_BITS long decode with one table look-up; longer ones walk the lengths.
const LUT_BITS = 11;
const LUT_SIZE = 1 << LUT_BITS;
const LUT_MASK = LUT_SIZE - 1;
// A valid block header (maps, selectors, code lengths) is under 40 KB; past this the input
// is not bzip2, and waiting for more of it would only grow the buffer.
const MAX_HEADER_BYTES = 1 << 20;
// A zero run is coded in bijective base 2; bzip2 rejects weights from 2^21 on.
const MAX_RUN_WEIGHT = 2 * 1024 * 1024;

// Inverse BWT: the cycle is cut into up to SEGMENTS pieces (one per 4096 bytes of block),
// walked LANES at a time; each piece is written into PAGE-byte pages.
const SEGMENTS = 128;
const LANES = 16;
const PAGE = 4096;

const STREAM_OUT_CHUNK = 64 * 1024;
const BUFFER_OUT_CHUNK = 1024 * 1024;
// A step of the output loop writes at most 255 repeats (RLE1 count) or one byte.
const MAX_STEP_OUTPUT = 256;

const NEED_MORE = Symbol("need more input");

// bzip2's CRC: CRC-32 with polynomial 0x04c11db7 fed MSB-first (not zlib's reflected one).
// Four tables let the loop fold 4 bytes per step; T[k][b] is byte b followed by k zero bytes.
const CRC_TABLES = makeCrcTables();

function makeCrcTables(): Uint32Array {
  const t = new Uint32Array(4 * 256);
  for (let i = 0; i < 256; i++) {
    let c = i << 24;
    for (let k = 0; k < 8; k++) c = c & 0x80000000 ? (c << 1) ^ 0x04c11db7 : c << 1;
    t[i] = c >>> 0;
  }
  for (let k = 1; k < 4; k++) {
    for (let i = 0; i < 256; i++) {
      const p = t[(k - 1) * 256 + i];
      t[k * 256 + i] = ((p << 8) ^ t[p >>> 24]) >>> 0;
    }
  }
  return t;
}

function crcUpdate(crc: number, data: Uint8Array, start: number, end: number): number {
  const t = CRC_TABLES;
  let i = start;
  for (; i + 4 <= end; i += 4) {
    crc ^= (data[i] << 24) | (data[i + 1] << 16) | (data[i + 2] << 8) | data[i + 3];
    crc = t[768 + (crc >>> 24)] ^ t[512 + ((crc >>> 16) & 255)] ^ t[256 + ((crc >>> 8) & 255)] ^ t[crc & 255];
  }
  for (; i < end; i++) crc = (crc << 8) ^ t[((crc >>> 24) ^ data[i]) & 255];
  return crc;
}

function hex(n: number): string {
  return "0x" + (n >>> 0).toString(16).padStart(8, "0");
}

const Phase = { StreamHeader: 0, BlockHeader: 1, Symbols: 2, Output: 3, Done: 4 } as const;
type Phase = (typeof Phase)[keyof typeof Phase];

class Bzip2Decoder {
  // Unconsumed input is buf[pos, end); bits already taken from it wait in bitBuf.
  private buf: Uint8Array = new Uint8Array(0);
  private owned = false; // buf is ours to compact; otherwise it is the caller's chunk
  private pos = 0;
  private end = 0;
  private bitBuf = 0;
  private bitCount = 0;
  private final = false;
  // Bytes that must be buffered before a cut-short header is parsed again: doubling keeps
  // re-parsing linear when input trickles in byte by byte.
  private retryAt = 0;

  private phase: Phase = Phase.StreamHeader;
  private streamNo = 0;
  private blockNo = 0;
  private blockMax = 0;
  private streamCrc = 0;

  // Current block header.
  private storedBlockCrc = 0;
  private origPtr = 0;
  private nInUse = 0;
  private readonly seqToUnseq = new Uint8Array(256);
  private nSelectors = 0;
  private readonly selectors = new Uint8Array(MAX_SELECTORS);
  private readonly codeLens = new Uint8Array(MAX_TABLES * MAX_ALPHA);
  // Huffman tables, canonical codes: per table t, lut[t << LUT_BITS | next LUT_BITS bits] =
  // (length << 9) | symbol for short codes, 0 otherwise; longer codes of length L are
  // firstCode[t*21+L] .. +codeCount[t*21+L]-1 and map to perm[t*258 + firstIdx[t*21+L] + rank].
  private readonly lut = new Uint16Array(MAX_TABLES * LUT_SIZE);
  private readonly firstCode = new Int32Array(MAX_TABLES * LEN_SLOTS);
  private readonly codeCount = new Int32Array(MAX_TABLES * LEN_SLOTS);
  private readonly firstIdx = new Int32Array(MAX_TABLES * LEN_SLOTS);
  private readonly perm = new Uint16Array(MAX_TABLES * MAX_ALPHA);
  private readonly maxLens = new Int32Array(MAX_TABLES);

  // Symbol decoding state, kept between pushes.
  private readonly mtf = new Uint8Array(256);
  private readonly byteCounts = new Int32Array(256);
  // Per position of the block: low byte the BWT byte, upper bits a link (see inverseBwt).
  // Negative entries mark segment cuts during the inverse BWT.
  private tt: Int32Array = new Int32Array(0);
  private text = new Uint8Array(0); // the block after inverse BWT, before RLE1
  private scratch = new Uint8Array(0);
  private pageNext = new Int32Array(0);
  private readonly segEntry = new Int32Array(SEGMENTS);
  private readonly segPage = new Int32Array(SEGMENTS);
  private readonly segEnd = new Int32Array(SEGMENTS);
  private readonly segNext = new Int32Array(SEGMENTS);
  private readonly laneRow = new Int32Array(LANES);
  private readonly laneW = new Int32Array(LANES);
  private readonly laneEnd = new Int32Array(LANES);
  private readonly lanePage = new Int32Array(LANES);
  private readonly laneSeg = new Int32Array(LANES);
  private nblock = 0;
  private groupLeft = 0;
  private groupNo = 0;
  private table = 0;
  private runAcc = 0;
  private runWeight = 1;

  private out: Uint8Array;

  constructor(
    private readonly emit: (chunk: Uint8Array) => void,
    private readonly outChunk: number,
  ) {
    this.out = new Uint8Array(0);
  }

  push(chunk: Uint8Array): void {
    if (this.final) throw new Error("bzip2: input pushed after finish()");
    if (chunk.length === 0) return;
    this.append(chunk);
    this.run();
    // A chunk adopted without copying may be reused by its producer after we return.
    if (!this.owned && this.pos < this.end) this.ownLeftover(0);
  }

  finish(): void {
    if (this.final) return;
    this.final = true;
    this.run();
  }

  private append(chunk: Uint8Array): void {
    if (this.pos === this.end) {
      this.buf = chunk;
      this.owned = false;
      this.pos = 0;
      this.end = chunk.length;
      return;
    }
    if (!this.owned || this.end + chunk.length > this.buf.length) this.ownLeftover(chunk.length);
    this.buf.set(chunk, this.end);
    this.end += chunk.length;
  }

  // Moves buf[pos, end) to the front of a buffer of ours with room for `extra` more bytes.
  private ownLeftover(extra: number): void {
    const live = this.end - this.pos;
    const need = live + extra;
    if (this.owned && need <= this.buf.length) {
      this.buf.copyWithin(0, this.pos, this.end);
    } else {
      const next = new Uint8Array(Math.max(need * 2, 64 * 1024));
      next.set(this.buf.subarray(this.pos, this.end));
      this.buf = next;
      this.owned = true;
    }
    this.pos = 0;
    this.end = live;
  }

  private run(): void {
    for (;;) {
      switch (this.phase) {
        case Phase.StreamHeader:
          if (this.pos >= this.end && this.bitCount === 0) {
            if (!this.final) return;
            if (this.streamNo === 0) throw new Bzip2Error("bzip2: input is empty (no stream header)");
            this.phase = Phase.Done;
            return;
          }
          if (!this.attempt(() => this.readStreamHeader())) return;
          break;
        case Phase.BlockHeader:
          if (!this.attempt(() => this.readBlockHeader())) return;
          break;
        case Phase.Symbols:
          if (!this.decodeSymbols()) return;
          break;
        case Phase.Output:
          this.writeBlock();
          break;
        case Phase.Done:
          return;
      }
    }
  }

  /** Runs a header parser; if input runs out, rewinds to where it started and waits. */
  private attempt(parse: () => void): boolean {
    const avail = this.end - this.pos;
    if (!this.final && avail < this.retryAt) return false;
    const pos = this.pos;
    const bitBuf = this.bitBuf;
    const bitCount = this.bitCount;
    try {
      parse();
      this.retryAt = 0;
      return true;
    } catch (e) {
      if (e !== NEED_MORE) throw e;
      this.pos = pos;
      this.bitBuf = bitBuf;
      this.bitCount = bitCount;
      if (avail >= MAX_HEADER_BYTES) throw this.corrupt("block header longer than 1 MiB");
      this.retryAt = avail * 2 + 16;
      return false;
    }
  }

  private bits(n: number): number {
    while (this.bitCount < n) {
      if (this.pos >= this.end) {
        if (this.final) throw this.truncated();
        throw NEED_MORE;
      }
      this.bitBuf = (this.bitBuf << 8) | this.buf[this.pos++];
      this.bitCount += 8;
    }
    this.bitCount -= n;
    return (this.bitBuf >>> this.bitCount) & ((1 << n) - 1);
  }

  private where(): string {
    return this.phase === Phase.StreamHeader
      ? `bzip2: stream ${this.streamNo + 1}`
      : `bzip2: stream ${this.streamNo + 1}, block ${this.blockNo + 1}`;
  }

  private corrupt(what: string): Bzip2Error {
    return new Bzip2Error(`${this.where()}: corrupt data (${what})`);
  }

  private truncated(): Bzip2Error {
    return new Bzip2Error(`${this.where()}: input is truncated`);
  }

  private readStreamHeader(): void {
    // Checked byte by byte, so that junk after a stream is named as such even when short.
    const notBzip2 = () =>
      new Bzip2Error(
        this.streamNo === 0
          ? 'bzip2: not bzip2 data (no "BZh1".."BZh9" header)'
          : `bzip2: data after stream ${this.streamNo} is not a bzip2 stream`,
      );
    if (this.bits(8) !== 0x42 || this.bits(8) !== 0x5a || this.bits(8) !== 0x68) throw notBzip2();
    const level = this.bits(8);
    if (level < 0x31 || level > 0x39) throw notBzip2();
    this.blockMax = (level - 0x30) * 100000;
    this.streamCrc = 0;
    this.blockNo = 0;
    this.phase = Phase.BlockHeader;
  }

  private readBlockHeader(): void {
    const hi = this.bits(24), lo = this.bits(24);
    if (hi === EOS_MAGIC_HI && lo === EOS_MAGIC_LO) return this.readStreamEnd();
    if (hi !== BLOCK_MAGIC_HI || lo !== BLOCK_MAGIC_LO) throw this.corrupt("bad block magic");
    const crc = ((this.bits(16) << 16) | this.bits(16)) >>> 0;
    if (this.bits(1)) throw this.corrupt("randomised blocks (bzip2 0.9.0) are not supported");
    const origPtr = this.bits(24);

    const used16 = this.bits(16);
    let nInUse = 0;
    for (let i = 0; i < 16; i++) {
      if (!(used16 & (0x8000 >>> i))) continue;
      const used = this.bits(16);
      for (let j = 0; j < 16; j++) if (used & (0x8000 >>> j)) this.seqToUnseq[nInUse++] = i * 16 + j;
    }
    if (nInUse === 0) throw this.corrupt("no byte values in use");
    const alphaSize = nInUse + 2;

    const nTables = this.bits(3);
    if (nTables < 2 || nTables > MAX_TABLES) throw this.corrupt(`${nTables} Huffman tables`);
    const nSelectors = this.bits(15);
    if (nSelectors === 0) throw this.corrupt("no selectors");
    const tableMtf = [0, 1, 2, 3, 4, 5];
    for (let i = 0; i < nSelectors; i++) {
      let j = 0;
      while (this.bits(1)) if (++j >= nTables) throw this.corrupt("selector out of range");
      const t = tableMtf[j];
      for (let k = j; k > 0; k--) tableMtf[k] = tableMtf[k - 1];
      tableMtf[0] = t;
      if (i < MAX_SELECTORS) this.selectors[i] = t;
    }

    for (let t = 0; t < nTables; t++) {
      let len = this.bits(5);
      for (let i = 0; i < alphaSize; i++) {
        for (;;) {
          if (len < 1 || len > MAX_CODE_LEN) throw this.corrupt("Huffman code length out of range");
          if (!this.bits(1)) break;
          len += this.bits(1) ? -1 : 1;
        }
        this.codeLens[t * MAX_ALPHA + i] = len;
      }
    }
    // Everything below runs once, after the last read, so a rewind leaves nothing half-set.
    for (let t = 0; t < nTables; t++) this.buildTable(t, alphaSize);
    this.storedBlockCrc = crc;
    this.origPtr = origPtr;
    this.nInUse = nInUse;
    this.nSelectors = Math.min(nSelectors, MAX_SELECTORS);
    for (let i = 0; i < nInUse; i++) this.mtf[i] = this.seqToUnseq[i];
    this.byteCounts.fill(0);
    this.nblock = 0;
    this.groupLeft = 0;
    this.groupNo = 0;
    this.runAcc = 0;
    this.runWeight = 1;
    this.phase = Phase.Symbols;
  }

  private readStreamEnd(): void {
    const crc = ((this.bits(16) << 16) | this.bits(16)) >>> 0;
    if (crc !== this.streamCrc >>> 0) {
      throw this.corrupt(`stream CRC mismatch: stored ${hex(crc)}, computed ${hex(this.streamCrc)}`);
    }
    this.bitCount -= this.bitCount & 7; // streams start on a byte boundary
    this.streamNo++;
    this.phase = Phase.StreamHeader;
  }

  private buildTable(t: number, alphaSize: number): void {
    const lens = this.codeLens, base = t * MAX_ALPHA, lenBase = t * LEN_SLOTS;
    const count = this.codeCount, firstCode = this.firstCode, firstIdx = this.firstIdx;
    count.fill(0, lenBase, lenBase + LEN_SLOTS);
    let maxLen = 0;
    for (let i = 0; i < alphaSize; i++) {
      const len = lens[base + i];
      count[lenBase + len]++;
      if (len > maxLen) maxLen = len;
    }
    // Canonical assignment, as bzip2 does it: by length, then by symbol.
    let code = 0, idx = 0;
    for (let len = 1; len <= MAX_CODE_LEN; len++) {
      firstCode[lenBase + len] = code;
      firstIdx[lenBase + len] = idx;
      code += count[lenBase + len];
      idx += count[lenBase + len];
      if (code > 1 << len) throw this.corrupt("over-subscribed Huffman code");
      code <<= 1;
    }
    this.maxLens[t] = maxLen;

    const perm = this.perm, lut = this.lut, lutBase = t << LUT_BITS;
    lut.fill(0, lutBase, lutBase + LUT_SIZE);
    let p = base;
    for (let len = 1; len <= maxLen; len++) {
      let c = firstCode[lenBase + len];
      for (let i = 0; i < alphaSize; i++) {
        if (lens[base + i] !== len) continue;
        perm[p++] = i;
        if (len <= LUT_BITS) {
          const from = lutBase + (c << (LUT_BITS - len));
          lut.fill((len << 9) | i, from, from + (1 << (LUT_BITS - len)));
        }
        c++;
      }
    }
  }

  /** Decodes Huffman symbols until end of block (true) or until more input is needed (false). */
  private decodeSymbols(): boolean {
    const buf = this.buf, end = this.end, final = this.final;
    const mtf = this.mtf, byteCounts = this.byteCounts;
    let tt: Int32Array = this.tt;
    const lut = this.lut, perm = this.perm, firstCode = this.firstCode, codeCount = this.codeCount;
    const firstIdx = this.firstIdx, selectors = this.selectors, nSelectors = this.nSelectors;
    const eob = this.nInUse + 1, blockMax = this.blockMax;
    let pos = this.pos, bitBuf = this.bitBuf, bitCount = this.bitCount;
    // At end of input the refill shifts in zero bytes, counted here so that reading into
    // them is reported as truncation; before that, suspension keeps this at zero.
    let padBytes = 0;
    let groupLeft = this.groupLeft, groupNo = this.groupNo, t = this.table;
    let lutBase = t << LUT_BITS, lenBase = t * LEN_SLOTS, maxLen = this.maxLens[t];
    let nblock = this.nblock, runAcc = this.runAcc, runWeight = this.runWeight;

    // No closures over these locals: captured variables would live in a heap context and
    // slow every access in the loop.
    for (;;) {
      if (groupLeft === 0) {
        if (!final && end - pos < GROUP_BYTES) {
          this.pos = pos;
          this.bitBuf = bitBuf;
          this.bitCount = bitCount;
          this.groupLeft = groupLeft;
          this.groupNo = groupNo;
          this.table = t;
          this.nblock = nblock;
          this.runAcc = runAcc;
          this.runWeight = runWeight;
          return false;
        }
        if (padBytes * 8 > bitCount) throw this.symbolError("", padBytes, bitCount);
        if (groupNo >= nSelectors) throw this.symbolError("more symbols than selectors", padBytes, bitCount);
        t = selectors[groupNo++];
        lutBase = t << LUT_BITS;
        lenBase = t * LEN_SLOTS;
        maxLen = this.maxLens[t];
        groupLeft = GROUP_SIZE;
      }
      groupLeft--;

      while (bitCount < 24) {
        if (pos < end) bitBuf = (bitBuf << 8) | buf[pos++];
        else {
          bitBuf <<= 8;
          padBytes++;
        }
        bitCount += 8;
      }
      let sym: number;
      const e = lut[lutBase + ((bitBuf >>> (bitCount - LUT_BITS)) & LUT_MASK)];
      if (e !== 0) {
        bitCount -= e >>> 9;
        sym = e & 511;
      } else {
        let len = LUT_BITS + 1;
        sym = -1;
        for (; len <= maxLen; len++) {
          const rank = ((bitBuf >>> (bitCount - len)) & ((1 << len) - 1)) - firstCode[lenBase + len];
          if (rank >= 0 && rank < codeCount[lenBase + len]) {
            sym = perm[t * MAX_ALPHA + firstIdx[lenBase + len] + rank];
            break;
          }
        }
        if (sym < 0) throw this.symbolError("invalid Huffman code", padBytes, bitCount);
        bitCount -= len;
      }

      if (sym <= 1) {
        // RUNA (0) adds the weight, RUNB (1) twice the weight: a run length in bijective base 2.
        if (runWeight >= MAX_RUN_WEIGHT) throw this.symbolError("zero run too long", padBytes, bitCount);
        runAcc += runWeight << sym;
        runWeight <<= 1;
        continue;
      }
      if (runAcc !== 0) {
        if (runAcc > blockMax - nblock) throw this.symbolError("block longer than the stream's block size", padBytes, bitCount);
        if (runAcc > tt.length - nblock) tt = this.growBlock(nblock, nblock + runAcc);
        const uc = mtf[0];
        byteCounts[uc] += runAcc;
        if (runAcc < 16) for (let k = 0; k < runAcc; k++) tt[nblock++] = uc;
        else {
          tt.fill(uc, nblock, nblock + runAcc);
          nblock += runAcc;
        }
        runAcc = 0;
        runWeight = 1;
      }
      if (sym === eob) break;
      if (nblock >= tt.length) {
        if (nblock >= blockMax) throw this.symbolError("block longer than the stream's block size", padBytes, bitCount);
        tt = this.growBlock(nblock, nblock + 1);
      }
      const idx = sym - 1;
      const uc = mtf[idx];
      if (idx < 16) for (let k = idx; k > 0; k--) mtf[k] = mtf[k - 1];
      else mtf.copyWithin(1, 0, idx);
      mtf[0] = uc;
      byteCounts[uc]++;
      tt[nblock++] = uc;
    }

    if (padBytes * 8 > bitCount) throw this.symbolError("", padBytes, bitCount);
    // Give back the zero padding so the next header reads only real input.
    this.pos = pos;
    this.bitBuf = bitBuf >>> (padBytes * 8);
    this.bitCount = bitCount - padBytes * 8;
    this.nblock = nblock;
    if (this.origPtr >= nblock) throw this.corrupt("BWT origin pointer out of range");
    this.phase = Phase.Output;
    return true;
  }

  // The block table grows as symbols arrive, so small inputs do not pay for a 900k block.
  private growBlock(used: number, need: number): Int32Array {
    const size = Math.min(this.blockMax, Math.max(need, this.tt.length * 2, 4096));
    const tt = new Int32Array(size);
    tt.set(this.tt.subarray(0, used));
    this.tt = tt;
    return tt;
  }

  // Reading into the zero padding past the end of input means the input was cut short.
  private symbolError(what: string, padBytes: number, bitCount: number): Bzip2Error {
    return padBytes * 8 > bitCount ? this.truncated() : this.corrupt(what);
  }

  /**
   * Inverse BWT of the block into `text`. Row j of the sorted rotations starting with byte c
   * is the k-th such row exactly when row i, the k-th row ending in c, is j rotated by one;
   * so tt[j] gets i, the row of the next rotation, and the text is the last bytes of the
   * rows met walking those links from the one after origPtr.
   *
   * Each step of that walk loads an address that the previous load produced, and the 3.6 MB
   * table does not fit in L2, so a single walk waits on memory at every byte (~25 ns here).
   * Instead the cycle is cut at SEGMENTS rows: LANES walks run interleaved, each from a cut
   * to the next cut, writing into pages of `scratch`, and the segments are then joined in
   * cycle order starting with the one after origPtr. A cut row's entry is replaced by the
   * complement of its segment number, so a walk knows where it stops and who comes next.
   */
  private inverseBwt(): void {
    const tt = this.tt, nblock = this.nblock, byteCounts = this.byteCounts;
    const maxSeg = Math.max(1, Math.min(SEGMENTS, nblock >>> 12));
    // Every segment wastes less than its last page.
    const pages = Math.ceil(nblock / PAGE) + maxSeg + 1;
    if (this.pageNext.length < pages) {
      this.scratch = new Uint8Array(pages * PAGE);
      this.pageNext = new Int32Array(pages);
    }
    if (this.text.length < nblock) this.text = new Uint8Array(this.tt.length);
    const cftab = new Int32Array(256);
    for (let c = 0, sum = 0; c < 256; c++) {
      cftab[c] = sum;
      sum += byteCounts[c];
    }
    for (let i = 0; i < nblock; i++) tt[cftab[tt[i] & 0xff]++] |= i << 8;

    // Cut rows: segment 0 starts at text[0]; the others anywhere, evenly spread.
    const segEntry = this.segEntry, segPage = this.segPage;
    const segEnd = this.segEnd, segNext = this.segNext;
    const first = tt[this.origPtr] >>> 8;
    let nSeg = 0;
    for (let k = 0; k < maxSeg; k++) {
      const row = k === 0 ? first : Math.floor((k * nblock) / maxSeg);
      if (k !== 0 && row === first) continue;
      segEntry[nSeg] = tt[row];
      tt[row] = ~nSeg;
      nSeg++;
    }

    const scratch = this.scratch, pageNext = this.pageNext;
    const laneRow = this.laneRow, laneW = this.laneW, laneEnd = this.laneEnd;
    const lanePage = this.lanePage, laneSeg = this.laneSeg;
    let nextPage = 0, nextSeg = 0;
    // Lane l takes the next segment, on a fresh page (once per segment, not per byte).
    const startLane = (l: number): void => {
      const seg = nextSeg++, page = nextPage++, e = segEntry[seg];
      pageNext[page] = -1;
      segPage[seg] = page;
      scratch[page * PAGE] = e;
      laneSeg[l] = seg;
      lanePage[l] = page;
      laneW[l] = page * PAGE + 1;
      laneEnd[l] = page * PAGE + PAGE;
      laneRow[l] = e >>> 8;
    };
    let active = Math.min(LANES, nSeg);
    for (let l = 0; l < active; l++) startLane(l);
    while (active > 0) {
      for (let l = 0; l < active; l++) {
        const e = tt[laneRow[l]];
        const w = laneW[l];
        if (e >= 0 && w !== laneEnd[l]) {
          scratch[w] = e;
          laneW[l] = w + 1;
          laneRow[l] = e >>> 8;
          continue;
        }
        if (e >= 0) {
          // Page full: continue the segment on a new page.
          const page = nextPage++;
          pageNext[page] = -1;
          pageNext[lanePage[l]] = page;
          lanePage[l] = page;
          laneW[l] = page * PAGE;
          laneEnd[l] = page * PAGE + PAGE;
          continue;
        }
        // Reached a cut: this segment ends; the lane takes the next segment, or retires.
        segEnd[laneSeg[l]] = w;
        segNext[laneSeg[l]] = ~e;
        if (nextSeg < nSeg) {
          startLane(l);
        } else {
          active--;
          laneRow[l] = laneRow[active];
          laneW[l] = laneW[active];
          laneEnd[l] = laneEnd[active];
          lanePage[l] = lanePage[active];
          laneSeg[l] = laneSeg[active];
          l--;
        }
      }
    }

    // Join the segments of the cycle through text[0]. A cycle shorter than the block (a
    // periodic block, or a corrupt one) repeats, as the plain walk of nblock steps would.
    const text = this.text;
    let o = 0, seg = 0, joined = 0;
    do {
      for (let page = segPage[seg]; ; ) {
        const from = page * PAGE, next = pageNext[page];
        const to = next < 0 ? segEnd[seg] : from + PAGE;
        text.set(scratch.subarray(from, to), o);
        o += to - from;
        if (next < 0) break;
        page = next;
      }
      seg = segNext[seg];
    } while (seg !== 0 && ++joined < nSeg);
    for (let i = o; i < nblock; i++) text[i] = text[i - o];
  }

  /** Inverse BWT and RLE1 of the decoded block, emitted in chunks, then the CRC checks. */
  private writeBlock(): void {
    this.inverseBwt();
    const text = this.text, nblock = this.nblock;
    // Small blocks get a small output buffer; RLE1 growth past it only makes more chunks.
    const outSize = Math.min(this.outChunk, Math.max(4096, nblock + MAX_STEP_OUTPUT));
    if (this.out.length < outSize) this.out = new Uint8Array(outSize);

    // RLE1: after 4 equal bytes comes a count (0..255) of further repeats.
    let prev = -1, runLen = 0;
    let crc = -1;
    let out = this.out;
    const limit = out.length - MAX_STEP_OUTPUT;
    let i = 0;
    while (i < nblock) {
      let o = 0;
      while (i < nblock && o <= limit) {
        const ch = text[i++];
        out[o++] = ch;
        if (ch !== prev) {
          prev = ch;
          runLen = 1;
        } else if (++runLen === 4) {
          // The byte after a run of 4 is its count; a block may end before it.
          if (i < nblock) for (let k = text[i++]; k > 0; k--) out[o++] = ch;
          runLen = 0;
        }
      }
      crc = crcUpdate(crc, out, 0, o);
      out = this.flushOut(out, o);
    }
    this.out = out;

    const blockCrc = ~crc >>> 0;
    if (blockCrc !== this.storedBlockCrc) {
      throw this.corrupt(`block CRC mismatch: stored ${hex(this.storedBlockCrc)}, computed ${hex(blockCrc)}`);
    }
    this.streamCrc = ((this.streamCrc << 1) | (this.streamCrc >>> 31)) ^ blockCrc;
    this.blockNo++;
    this.phase = Phase.BlockHeader;
  }

  // A mostly full buffer is handed over and replaced; a short tail is copied out instead so
  // a few bytes never pin a whole chunk-sized buffer in the consumer.
  private flushOut(out: Uint8Array, o: number): Uint8Array {
    if (o === 0) return out;
    if (o >= out.length >>> 1) {
      this.emit(out.subarray(0, o));
      return new Uint8Array(out.length);
    }
    this.emit(out.slice(0, o));
    return out;
  }
}

/** Decompresses a whole bzip2 buffer (all concatenated streams). Throws Bzip2Error on corrupt/truncated input. */
export function bunzip2(data: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  let total = 0;
  const decoder = new Bzip2Decoder((chunk) => {
    parts.push(chunk);
    total += chunk.length;
  }, BUFFER_OUT_CHUNK);
  decoder.push(data);
  decoder.finish();
  return concat(parts, total);
}

/**
 * A streaming decoder: feed compressed chunks, get decompressed chunks out as blocks complete;
 * memory bounded by one block (≤ 900 kB input block, its output emitted in chunks).
 * Output of one input chunk is enqueued before the next chunk is taken, so feed chunks of a
 * usual stream size (≤ 1 MB) rather than a whole file to keep queued output small.
 */
export function bunzip2Stream(): TransformStream<Uint8Array, Uint8Array> {
  let decoder: Bzip2Decoder;
  return new TransformStream<Uint8Array, Uint8Array>({
    start(controller) {
      decoder = new Bzip2Decoder((chunk) => controller.enqueue(chunk), STREAM_OUT_CHUNK);
    },
    transform(chunk) {
      decoder.push(chunk);
    },
    flush() {
      decoder.finish();
    },
  });
}
