// DOM helpers. Every string becomes a text node: the front-end never builds HTML from data.

/** h("p", {class: "x", onclick: fn}, "text", child): an element with attributes and children. */
export function h(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

/** An SVG element (charts, ECG paper): same rules as h(). */
export function svg(tag, props, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

/** Replace a node's children (null/false children are skipped, strings become text). */
export function fill(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

export function append(node, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const loadedStyles = new Set();

/** Load a feature's stylesheet (web/css/<name>.css) once; the CSP allows only our own files. */
export function loadStyle(name) {
  if (loadedStyles.has(name)) return;
  loadedStyles.add(name);
  document.head.append(h("link", { rel: "stylesheet", href: `/static/css/${name}.css` }));
}
