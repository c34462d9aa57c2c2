// shoprec storefront: the only script, served by the app. Every form works without it; it
// only keeps the scroll position across the redirects after "Add to basket" and
// "Not interested", so that the visitor stays where the list was.
(function () {
  "use strict";
  var KEY = "shoprec-scroll";
  document.addEventListener("submit", function (event) {
    if (event.target.closest(".card")) {
      sessionStorage.setItem(KEY, String(window.scrollY));
    }
  });
  var saved = sessionStorage.getItem(KEY);
  if (saved !== null) {
    sessionStorage.removeItem(KEY);
    window.addEventListener("load", function () { window.scrollTo(0, Number(saved)); });
  }
})();
