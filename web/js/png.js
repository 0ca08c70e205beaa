// Reading the text chunks of a PNG file (SaveImage stores "prompt" and "workflow" there).

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * The text chunks (tEXt, zTXt, iTXt) of a PNG as {keyword: text}.
 * Throws an Error when the data is not a PNG.
 */
export async function readPngText(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) throw new Error("not a PNG file");
  const view = new DataView(buffer instanceof ArrayBuffer ? buffer : bytes.buffer);
  const latin1 = new TextDecoder("latin1");
  const utf8 = new TextDecoder("utf-8");
  const found = {};
  let offset = 8;
  while (offset + 8 <= bytes.length) {
    const length = view.getUint32(offset);
    const type = latin1.decode(bytes.subarray(offset + 4, offset + 8));
    const data = bytes.subarray(offset + 8, offset + 8 + length);
    if (type === "IEND") break;
    const zero = data.indexOf(0);
    if (zero > 0 && (type === "tEXt" || type === "zTXt" || type === "iTXt")) {
      const keyword = latin1.decode(data.subarray(0, zero));
      if (type === "tEXt") {
        found[keyword] = latin1.decode(data.subarray(zero + 1));
      } else if (type === "zTXt") {
        found[keyword] = latin1.decode(await inflate(data.subarray(zero + 2)));
      } else {
        const compressed = data[zero + 1] === 1;
        let rest = zero + 3;
        rest = data.indexOf(0, rest) + 1; // language tag
        rest = data.indexOf(0, rest) + 1; // translated keyword
        const text = data.subarray(rest);
        found[keyword] = utf8.decode(compressed ? await inflate(text) : text);
      }
    }
    offset += 12 + length;
  }
  return found;
}
