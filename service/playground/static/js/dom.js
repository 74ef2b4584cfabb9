// The one DOM helper the modules share: user data goes in through properties (textContent, value), never
// as HTML, so an adapter name or a prompt cannot inject markup.

export function element(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}
