// The files of a model folder the user picked or dropped, as [relative path, File] pairs (read
// later, only those the loader needs). A picked folder (<input webkitdirectory>) gives each
// file's webkitRelativePath; a dropped folder arrives as one entry that has to be walked with the
// File and Directory Entries API, which wasm-bindgen's web-sys does not cover well.

export function pickedFiles(input) {
  return Array.from(input.files ?? [], (f) => [f.webkitRelativePath || f.name, f]);
}

// Must be called inside the drop handler: the DataTransfer's items are only readable there.
export function droppedFiles(dataTransfer) {
  const items = Array.from(dataTransfer.items ?? []).filter((i) => i.kind === 'file');
  const entries = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  const loose = Array.from(dataTransfer.files ?? [], (f) => [f.name, f]);
  if (entries.length === 0 || entries.some((e) => !e)) return Promise.resolve(loose);
  const out = [];
  const walk = async (entry, prefix) => {
    if (entry.isFile) {
      out.push([prefix + entry.name, await new Promise((ok, err) => entry.file(ok, err))]);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((ok, err) => reader.readEntries(ok, err));
        if (batch.length === 0) break;
        for (const e of batch) await walk(e, `${prefix}${entry.name}/`);
      }
    }
  };
  return (async () => {
    for (const e of entries) await walk(e, '');
    return out;
  })();
}
