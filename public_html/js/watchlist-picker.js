// Named watchlists: pick, create, rename, delete. The table shows the active list.

export function bindWatchlistPicker(document, lists, onSwitch) {
  const select = document.getElementById('list-select');
  const fill = () => {
    select.replaceChildren(...lists.names().map((name) => new Option(name, name, false, name === lists.active)));
  };
  fill();
  select.addEventListener('change', () => {
    lists.activate(select.value);
    onSwitch(lists.symbols());
  });
  document.getElementById('list-new').addEventListener('click', () => {
    const name = window.prompt('Name of the new watchlist')?.trim();
    if (!name || lists.names().includes(name)) return;
    lists.activate(name);
    fill();
    onSwitch([]);
  });
  document.getElementById('list-rename').addEventListener('click', () => {
    const name = window.prompt('New name', lists.active)?.trim();
    if (name && lists.rename(lists.active, name)) fill();
  });
  document.getElementById('list-delete').addEventListener('click', () => {
    if (lists.names().length < 2 || !window.confirm(`Delete the watchlist “${lists.active}”?`)) return;
    lists.remove(lists.active);
    fill();
    onSwitch(lists.symbols());
  });
}
