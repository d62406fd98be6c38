// Element construction without innerHTML, so server-sent text is never parsed as markup.

/**
 * el('td', { class: 'price', text: '1.00' }, child...). Keys: class, text, dataset, on<event>,
 * anything else becomes an attribute (true -> empty attribute, null/false -> omitted).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  node.append(...children);
  return node;
}
